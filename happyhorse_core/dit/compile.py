"""Per-block torch.compile of the DiT with a persistent on-disk cache (the pack's own compile path).

`SandwichDiT.compile_blocks()` compiles every transformer layer in place; layers of the same kind
(experts x MLP kind x windowed attention) share one graph, so the distilled model compiles 3
graphs and the 1080p SR model 5, one kind at a time as the first forward reaches it. Token counts
are symbolic (`dynamic=True`): one graph per kind serves every prompt length and clip length. The
windowed SR attention runs outside the graphs (dit/local_attention.py), so the SR graphs hold
only the glue and compile in about the time of the base ones.

`enable_compile` adds the cache: inductor's FX-graph cache and Triton's kernel cache are pointed
at `cache_dir` (when given) so compiled kernels survive a restart; a later process with the same
torch, model kind and shapes loads them instead of compiling (ComfyUI: the pack passes a folder
in its user directory). Environment variables the user set already win.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import COMPILE_MODES, SandwichDiT

log = logging.getLogger("HappyHorse")


@dataclass(frozen=True)
class CompileOptions:
    mode: str = "default"  # one of COMPILE_MODES; "max-autotune-no-cudagraphs" tunes GEMMs (slower first step)
    dynamic: bool = True  # symbolic token counts: no recompile for another prompt or clip length
    cache_dir: str | None = None  # persistent inductor / Triton cache; None = torch's default (/tmp)

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {self.mode!r}")


def use_cache_dir(path: str | os.PathLike) -> dict[str, str]:
    """Point inductor's and Triton's on-disk caches at `path` (created); returns what was set."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    wanted = {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"), "TRITON_CACHE_DIR": str(root / "triton")}
    applied = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    torch._inductor.config.fx_graph_cache = True  # on by default in recent torch; make it explicit
    return applied


def enable_compile(model: SandwichDiT, opts: CompileOptions = CompileOptions()) -> SandwichDiT:
    """Compile `model`'s blocks in place (idempotent) with `opts`; returns the model."""
    if opts.cache_dir:
        applied = use_cache_dir(opts.cache_dir)
        if applied:
            log.info("HappyHorse: torch.compile cache in %s", opts.cache_dir)
    if getattr(model, "compiled", False):
        return model
    return model.compile_blocks(mode=opts.mode, dynamic=opts.dynamic)


def disable_compile(model: SandwichDiT) -> SandwichDiT:
    """Undo compile_blocks(): the layers run eagerly again (compiled code stays in torch's caches)."""
    for layer in model.block.layers:
        layer._compiled_call_impl = None  # what nn.Module.compile() set
    model.compiled = False
    return model


def apply_compile(model: SandwichDiT, settings: dict | None) -> SandwichDiT:
    """Bring `model` to the requested state: compiled with `settings` (CompileOptions fields as a
    dict, from a node) or eager when `settings` is None. A model shared between graphs is thus
    compiled only while a graph that asks for it runs."""
    if not settings:
        return disable_compile(model) if getattr(model, "compiled", False) else model
    return enable_compile(model, CompileOptions(**settings))
