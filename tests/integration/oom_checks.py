"""Checks of nodes/runtime.oom_advice INSIDE ComfyUI's python (no server): run as
    COMFYUI_HOME/venv/bin/python tests/integration/oom_checks.py COMFYUI_HOME
Prints one JSON object {check name: "ok" | traceback}; test_oom_advice.py asserts on it.

ComfyUI runs here with --cpu, where the offload device is the CPU itself. To see that oom_advice
really moves the models to ComfyUI's offload device (and not merely leaves them where they were),
`comfy.model_management.unet_offload_device` is pointed at the meta device for these checks: a model
that started on the CPU must end up with every tensor on meta.
"""
from __future__ import annotations

import sys
from pathlib import Path

from in_comfy import check, report, start_comfy

HOME = Path(sys.argv[1])
start_comfy(HOME)
import torch  # noqa: E402
import comfy.model_management as mm  # noqa: E402

from pack_import import pack_module  # noqa: E402

pipeline = pack_module("happyhorse_core.sampling.pipeline")
SamplingOptions, TextConditioning, generate = pipeline.SamplingOptions, pipeline.TextConditioning, pipeline.generate
tiny_dit = pack_module("happyhorse_core.testing.tiny_dit").tiny_dit

# the pack's nodes/ inside the pack package (ComfyUI's `nodes` module owns that name here)
runtime, types = pack_module("nodes.runtime"), pack_module("nodes.types")
OFFLOAD = torch.device("meta")
mm.unet_offload_device = lambda: OFFLOAD
EMPTIED = []
_soft_empty_cache = mm.soft_empty_cache
mm.soft_empty_cache = lambda *a, **k: (EMPTIED.append(1), _soft_empty_cache(*a, **k))[1]
ADVICE = ("Out of GPU memory in {where}", "fp8_e4m3fn_scaled", "fp8_scope 'shared'", "HappyHorse Block Swap",
          "blocks_on_device", "smaller size or fewer seconds", "256p", "HappyHorse Super-Resolution")


def loaded_dit(block_swap=None):
    model = tiny_dit("distill", seed=0, compute_dtype=torch.float32)
    return types.LoadedDiT(model=model, variant="distill", path="tiny", block_swap=block_swap)


def devices(module) -> set:
    return {t.device.type for t in list(module.parameters()) + list(module.buffers())}


def fake_oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total)")


def expect_advice(fn, where: str) -> RuntimeError:
    try:
        fn()
    except RuntimeError as e:
        if isinstance(e, torch.OutOfMemoryError):
            raise AssertionError(f"the OutOfMemoryError came through unchanged: {e}") from e
        msg = str(e)
        missing = [p.format(where=where) for p in ADVICE if p.format(where=where) not in msg]
        assert type(e) is RuntimeError and not missing, f"advice lacks {missing}: {msg}"
        assert isinstance(e.__cause__, torch.OutOfMemoryError), f"the OOM is not chained: {e.__cause__!r}"
        return e
    raise AssertionError("no error was raised")


@check
def oom_becomes_advice_and_model_is_offloaded():
    loaded = loaded_dit()
    assert devices(loaded.model) == {"cpu"}
    EMPTIED.clear()

    def run():
        with runtime.oom_advice("the HappyHorse sampler", loaded):
            raise fake_oom()

    expect_advice(run, "the HappyHorse sampler")
    assert devices(loaded.model) == {"meta"}, devices(loaded.model)
    assert EMPTIED, "soft_empty_cache was not called (unload_all_models calls it too)"


@check
def oom_inside_a_forward_of_the_placed_model():
    """The node's own stack: oom_advice + placed() (ComfyUI-managed) around generate(); OOM in block 3."""
    cb = pack_module("nodes.comfy_bridge")
    loaded = loaded_dit()
    loaded.patcher = cb.wrap_model(loaded.model)
    loaded.model.block.layers[3].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(fake_oom()))
    text = TextConditioning(torch.randn(4, 3584), torch.randn(3, 3584))

    def run():
        with runtime.oom_advice("the HappyHorse sampler", loaded), runtime.placed(loaded) as device:
            generate(loaded.model, text, latent_frames=2, latent_h=2, latent_w=2, audio_frames=5,
                     opts=SamplingOptions(steps=2), device=device)

    try:
        expect_advice(run, "the HappyHorse sampler")
        assert devices(loaded.model) == {"meta"}, devices(loaded.model)
    finally:
        mm.unload_all_models()


@check
def oom_with_block_swap_removes_hooks_and_offloads():
    loaded = loaded_dit(block_swap=types.BlockSwapConfig(blocks_on_device=2, pin_memory=False))

    def run():
        with runtime.oom_advice("HappyHorse Super-Resolution", loaded), runtime.placed(loaded):
            assert loaded.model.block.layers[0]._forward_pre_hooks, "block swap hooks were not installed"
            raise fake_oom()

    expect_advice(run, "HappyHorse Super-Resolution")
    assert devices(loaded.model) == {"meta"}, devices(loaded.model)
    hooks = [len(m._forward_pre_hooks) + len(m._forward_hooks) for m in [loaded.model, *loaded.model.block.layers]]
    assert not any(hooks), f"block swap hooks left behind: {hooks}"


@check
def oom_without_models_still_advises():
    def run():
        with runtime.oom_advice("HappyHorse Decode Video", None):
            raise fake_oom()

    expect_advice(run, "HappyHorse Decode Video")


@check
def other_errors_pass_through_untouched():
    loaded = loaded_dit()
    EMPTIED.clear()
    try:
        with runtime.oom_advice("the HappyHorse sampler", loaded):
            raise ValueError("the prompt is empty")
    except ValueError as e:
        assert str(e) == "the prompt is empty" and e.__cause__ is None
    else:
        raise AssertionError("ValueError was swallowed")
    assert devices(loaded.model) == {"cpu"} and EMPTIED == [], "a non-OOM error must not offload anything"


def expect_kind_advice(fn, where: str, cause: type, first: str) -> None:
    """Like expect_advice for failures that are not torch.OutOfMemoryError: the advice names the kind first."""
    try:
        fn()
    except RuntimeError as e:
        msg = str(e)
        assert type(e) is RuntimeError and msg.startswith(first.format(where=where)), msg
        missing = [p.format(where=where) for p in ADVICE[1:] if p.format(where=where) not in msg]
        assert not missing, f"advice lacks {missing}: {msg}"
        assert isinstance(e.__cause__, cause), f"the original error is not chained: {e.__cause__!r}"
        return
    raise AssertionError("no error was raised")


@check
def device_mismatch_becomes_advice_and_frees():
    loaded = loaded_dit()
    EMPTIED.clear()

    def run():
        with runtime.oom_advice("the HappyHorse sampler", loaded):
            raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                               "cuda:0 and cpu!")

    expect_kind_advice(run, "the HappyHorse sampler", RuntimeError, "A model's weights and its inputs")
    assert devices(loaded.model) == {"meta"} and EMPTIED, "the failed run's model was not released"


@check
def host_allocation_failures_become_advice():
    for err in (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 30641094656 bytes."), MemoryError()):
        EMPTIED.clear()

        def run():
            with runtime.oom_advice("HappyHorse Model Loader"):
                raise err

        expect_kind_advice(run, "HappyHorse Model Loader", type(err), "Out of system memory (RAM) in {where}")
        assert EMPTIED


@check
def next_prompt_runs_after_an_oom():
    """OOM in the middle of a placed() forward, then the same LoadedDiT runs a whole generate()."""
    cb = pack_module("nodes.comfy_bridge")
    mm.unet_offload_device = lambda: torch.device("cpu")  # a real offload device: the model must stay usable
    loaded = loaded_dit()
    loaded.patcher = cb.wrap_model(loaded.model)
    handle = loaded.model.block.layers[2].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(fake_oom()))
    text = TextConditioning(torch.randn(4, 3584), torch.randn(3, 3584))

    def run():
        with runtime.oom_advice("the HappyHorse sampler", loaded), runtime.placed(loaded) as device:
            return generate(loaded.model, text, latent_frames=2, latent_h=2, latent_w=2, audio_frames=5,
                            opts=SamplingOptions(steps=2), device=device)

    try:
        expect_advice(run, "the HappyHorse sampler")
        handle.remove()
        v, a = run()
        assert torch.isfinite(v).all() and torch.isfinite(a).all()
    finally:
        mm.unet_offload_device = lambda: OFFLOAD
        mm.unload_all_models()


if __name__ == "__main__":
    report()
