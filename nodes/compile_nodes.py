"""HappyHorse Compile: per-block torch.compile of the DiT with a persistent cache (the pack's own path).

The node marks the model; the blocks are compiled when a sampler or super-resolution node places
the model (nodes/runtime.placed), and a model reached without this node runs eagerly again.
"""
from __future__ import annotations

import dataclasses

from .comfy_bridge import io
from .types import CATEGORY, HHModel

MODES = ["default", "max-autotune-no-cudagraphs"]


class CompileSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseCompile",
            display_name="HappyHorse Compile",
            category=f"{CATEGORY}/loaders",
            description=("torch.compile of each of the 40 transformer blocks (needs a working Triton on CUDA). "
                         "Blocks of the same kind share one graph (3 for the 256p models, 5 for 1080p SR), token "
                         "counts are dynamic (no recompile for another prompt or clip length), and compiled "
                         "kernels are cached in ComfyUI's user folder so a restart reuses them. The first "
                         "step compiles (tens of seconds per kind); later steps run ~1.8x faster on an H100."),
            inputs=[
                HHModel.Input("model"),
                io.Combo.Input("mode", options=MODES, default="default",
                               tooltip="default = quick to compile. max-autotune-no-cudagraphs also benchmarks "
                                       "GEMM kernels: a few minutes more on the first run, sometimes faster."),
                io.Boolean.Input("persistent_cache", default=True,
                                 tooltip="Keep compiled kernels in user/happyhorse/torch_compile_cache so the "
                                         "next ComfyUI start does not compile again."),
            ],
            outputs=[HHModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, mode, persistent_cache) -> io.NodeOutput:
        from . import comfy_bridge as cb
        settings = {"mode": mode, "dynamic": True, "cache_dir": cb.compile_cache_dir() if persistent_cache else None}
        return io.NodeOutput(dataclasses.replace(model, compile=settings))


NODES = [CompileSettings]
