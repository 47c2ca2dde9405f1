"""SandwichDiT: adapter -> 40 transformer layers -> per-modality output heads (MODEL_SPEC §1.2).

The module tree mirrors the reference so that `state_dict()` keys are the published ones:
`adapter.*`, `block.layers.{i}.*`, `final_norm_{video,audio}`, `final_linear_{video,audio}`.
There is no timestep input: the noise level is read from the latents themselves.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from .attention import resolve_backend
from .config import DiTConfig
from .modality import ModalitySplit
from .ops import Ops
from .block import StepContext, TransformerLayer
from .cache import StepCache
from .layers import Adapter


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class _Blocks(nn.Module):
    """Holds `layers` so keys read `block.layers.{i}` like the reference."""

    def __init__(self, cfg: DiTConfig, ops: Ops) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg, i, ops) for i in range(cfg.num_layers))


class SandwichDiT(nn.Module):
    def __init__(self, cfg: DiTConfig, ops: Ops | None = None, attn_backend: str = "sdpa") -> None:
        super().__init__()
        ops = ops or Ops()
        self.config, self.ops = cfg, ops
        self.compute_dtype = ops.compute_dtype
        self.attn_backend = attn_backend
        self.adapter = Adapter(cfg, ops)
        self.block = _Blocks(cfg, ops)
        d = cfg.hidden_size
        self.final_norm_video = ops.rms_norm(d, 1, cfg.norm_eps)
        self.final_norm_audio = ops.rms_norm(d, 1, cfg.norm_eps)
        self.final_linear_video = ops.fp32_linear(d, cfg.video_in_channels, bias=False)
        self.final_linear_audio = ops.fp32_linear(d, cfg.audio_in_channels, bias=False)
        self.compiled = False  # set by compile_blocks()

    @property
    def layers(self) -> nn.ModuleList:
        return self.block.layers

    # A whole-model torch.compile (e.g. ComfyUI's TorchCompileModel) compiles each transformer layer as
    # its own graph: this frame (token bookkeeping, caches, the loop) stays eager, the frames it calls
    # are compiled. Layers of one kind share code, and a second prompt length makes token counts
    # dynamic (torch's automatic dynamic shapes), so later lengths do not recompile.
    @torch.compiler.disable(recursive=False)
    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor, coords: torch.Tensor,
                tokens_per_frame: int, capture: list | None = None,
                cache: StepCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoiser call.

        video [Nv, 192] patchified latent tokens, audio [F, 64], text [n, Dt], coords [Nv+F+n, 9].
        Returns the velocity tokens: video [Nv, 192] and audio [F, 64], fp32.
        `capture`, if given, receives the residual stream after every layer (parity checks).
        `cache`, if given, memoises the text embedding and RoPE table across calls that pass the
        same `text` / `coords` tensors (see dit/cache.py).
        """
        split = ModalitySplit(video.shape[0], audio.shape[0], text.shape[0])
        if coords.shape[0] != split.total:
            raise ValueError(f"coords has {coords.shape[0]} rows but the sequence has {split.total} tokens")
        device = video.device  # from the inputs: under a partial load weights may sit elsewhere
        text_hidden = rope = None
        if cache is not None:
            text_hidden = cache.get("text_hidden", text, self.adapter.embed_text) if split.text else None
            rope = cache.get("rope", coords, lambda c: self.adapter.rope(c.to(device)))
        h = self.adapter(video, audio, text, text_hidden)  # [L, D] fp32
        ctx = StepContext(split=split, rope=rope if rope is not None else self.adapter.rope(coords.to(device)),
                          compute_dtype=self.compute_dtype,
                          backend=resolve_backend(self.attn_backend, h.device, self.compute_dtype),
                          tokens_per_frame=max(tokens_per_frame, 1))
        if self.compiled:  # widths never vary: keep them out of the symbolic sizes (no duck-size clashes)
            torch._dynamo.mark_static(h, 1)
            torch._dynamo.mark_static(ctx.rope, 1)
        for layer in self.block.layers:
            h = layer(h, ctx)
            if capture is not None:
                capture.append(h.clone())  # layers update h in place
        hv, ha = h[split.slice(0)], h[split.slice(1)]
        video_out = self.final_linear_video(self.final_norm_video(hv))  # [Nv, 192]
        audio_out = self.final_linear_audio(self.final_norm_audio(ha))  # [F, 64]
        return video_out, audio_out

    # -- speed -------------------------------------------------------------------------------
    def compile_blocks(self, mode: str | None = None, dynamic: bool | None = True, backend: str = "inductor",
                       options: dict | None = None) -> "SandwichDiT":
        """torch.compile every transformer layer in place (off unless called); returns self.

        Layers of the same kind (experts x MLP kind x local attention) share compiled code, so
        the real model compiles 3-5 graphs. With `dynamic=True` (default) token counts are
        symbolic from the start: one graph per kind serves every prompt length, so CFG with a
        negative prompt of another length does not recompile. `False` compiles one graph per
        token count; `None` leaves it to torch's automatic dynamic shapes (which may compile
        some kinds twice). Inductor is asked to round at every bf16 cast as eager does
        (`emulate_precision_casts`), which keeps the bf16 golden error at the eager level
        (without it: 4.0e-3 instead of 3.0e-3 mean abs on dit_case1). State-dict keys are
        unchanged. The first call of each graph compiles it (bench/RESULTS.md has the times);
        later calls, and later processes through inductor's on-disk cache, reuse it.
        """
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES} or None, got {mode!r}")
        opts = None
        if backend == "inductor":  # torch.compile takes mode or options, not both: spell the mode out
            from torch._inductor import list_mode_options
            opts = {**list_mode_options(mode or "default"), "emulate_precision_casts": True, **(options or {})}
        elif options:
            opts = dict(options)
        kinds = {(layer.attention.local, layer.mlp.gelu, layer.attention.linear_qkv.experts) for layer in self.layers}
        if torch._dynamo.config.cache_size_limit < 2 * len(kinds):  # room for a static + a dynamic graph per kind
            torch._dynamo.config.cache_size_limit = 2 * len(kinds)
        for layer in self.block.layers:
            layer.compile(dynamic=dynamic, backend=backend, options=opts)
        self.compiled = True
        return self

    # -- memory ----------------------------------------------------------------------------
    def device_bytes(self) -> dict[str, int]:
        """Bytes of parameters and buffers per device, e.g. {"cpu": ..., "cuda:0": ...}."""
        out: dict[str, int] = defaultdict(int)
        for t in list(self.parameters()) + list(self.buffers()):
            out[str(t.device)] += t.numel() * t.element_size()
        return dict(out)
