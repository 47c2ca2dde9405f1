"""Turbo-VAED speed options (decoders/turbo_speed.py) decode the same video as the plain module."""
from __future__ import annotations

import copy

import torch

from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig
from happyhorse_core.decoders.turbo_speed import DecodeSpeed, apply_decode_speed


def tiny_vaed() -> TurboVAED:
    torch.manual_seed(0)
    vaed = TurboVAED(TurboVAEDConfig.tiny()).eval()
    with torch.no_grad():
        for p in vaed.parameters():
            p.normal_(0.0, 0.1 if p.ndim == 1 else p[0].numel() ** -0.5)
    return vaed


def latent(frames: int = 3) -> torch.Tensor:
    return torch.randn(1, 48, frames, 4, 6, generator=torch.Generator().manual_seed(1))


def test_channels_last_decodes_the_same_video():
    """Same convolutions in NDHWC: only the fp32 summation order may change (bound 1e-5 of the range)."""
    plain = tiny_vaed()
    fast = apply_decode_speed(copy.deepcopy(plain), DecodeSpeed(channels_last=True))
    assert fast.decoder.conv_in.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    ref, got = plain.decode(latent()), fast.decode(latent())
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)


def test_bf16_option_casts_weights_and_output():
    plain = tiny_vaed()
    fast = apply_decode_speed(copy.deepcopy(plain), DecodeSpeed(dtype=torch.bfloat16, channels_last=True))
    assert fast.decoder.conv_in.conv.weight.dtype == torch.bfloat16
    ref, got = plain.decode(latent()), fast.decode(latent())
    assert got.dtype == torch.bfloat16
    err = (got.float() - ref).norm() / ref.norm()
    assert err < 0.05  # bf16 activations through a few convs: ~2^-8 per op
    assert DecodeSpeed(torch.bfloat16, True, True).describe() == "bfloat16+channels_last+compiled"
