"""Speed options of the Turbo-VAED decode (the 1080p decode is ~5.8 s in the reference on an H100).

`DecodeSpeed` bundles three independent switches, all off by default so the decoder stays the
plain reference-faithful module:

* dtype: bf16 weights and activations (the pipeline already decodes in bf16);
* channels_last: Conv3d weights and the latent in `torch.channels_last_3d` (NDHWC), the layout
  cuDNN's fastest bf16 3-D convolutions use; the values are the same convolutions (summation
  order may differ, i.e. fp32 rounding only);
* compile: torch.compile of the decoder network (two static shapes: the first window and the
  others), fusing the norms and activations between the convolutions.

bench/gpu_check.py measures each combination at 1080p.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .turbo_vaed import TurboVAED


@dataclass(frozen=True)
class DecodeSpeed:
    dtype: torch.dtype | None = None  # None = keep the loaded dtype
    channels_last: bool = False
    compile: bool = False

    def describe(self) -> str:
        parts = [str(self.dtype).removeprefix("torch.") if self.dtype else "as loaded"]
        parts += ["channels_last"] * self.channels_last + ["compiled"] * self.compile
        return "+".join(parts)


class _ChannelsLastInput(torch.nn.Module):
    """Wraps the decoder network so every window enters in NDHWC."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def conv_in(self) -> torch.nn.Module:  # TurboVAED._prepare reads the input conv's dtype/device
        return self.net.conv_in

    def forward(self, z: torch.Tensor, is_first_chunk: bool) -> torch.Tensor:
        return self.net(z.contiguous(memory_format=torch.channels_last_3d), is_first_chunk)


def apply_decode_speed(vaed: TurboVAED, speed: DecodeSpeed) -> TurboVAED:
    """Apply `speed` to `vaed` in place and return it. State-dict keys are unchanged except under
    channels_last, where the decoder network is wrapped (use it for inference, not for saving)."""
    if speed.dtype is not None:
        vaed.to(dtype=speed.dtype)
    if speed.channels_last:
        with torch.no_grad():
            for p in vaed.parameters():
                if p.ndim == 5:  # Conv3d weights -> NDHWC (2-D convs keep their layout)
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        if not isinstance(vaed.decoder, _ChannelsLastInput):
            vaed.decoder = _ChannelsLastInput(vaed.decoder)
    if speed.compile:
        vaed.decoder.compile(dynamic=False)
    return vaed
