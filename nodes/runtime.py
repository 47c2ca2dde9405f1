"""What every compute node shares: placing the DiT for a run, out-of-memory advice, previews.

Memory rule (README "Memory"): without block swap the DiT is a normal ComfyUI model: the
sampler asks ComfyUI to load it (other models are evicted as needed) and "Unload models"
frees it. With block swap the pack owns placement: ComfyUI is asked to free the bytes the
resident blocks need, N blocks go to the GPU for the run, and everything returns to system RAM
afterwards, so the two mechanisms never move the same weights.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from . import comfy_bridge as cb

log = logging.getLogger("HappyHorse")

OOM_ADVICE = ("Out of GPU memory in {where}. Try, in this order: weight_dtype fp8_e4m3fn_scaled with fp8_scope "
              "'shared' on the model loader; a HappyHorse Block Swap node with fewer blocks_on_device (e.g. 20, "
              "then 10); a smaller size or fewer seconds (generate at 256p and use HappyHorse Super-Resolution).")


@contextlib.contextmanager
def placed(loaded):
    """Put a LoadedDiT where it runs for the duration of the block; yields the compute device."""
    device = cb.torch_device()
    swap_cfg = loaded.block_swap
    if not swap_cfg:
        cb.load_models([loaded.patcher])
        yield device
        return
    from happyhorse_core.dit.offload import BlockSwap, plan_block_swap
    layers = loaded.model.block.layers
    n = min(int(swap_cfg["blocks_on_device"]), len(layers))  # N >= block count: everything resident
    plan = plan_block_swap(layers, n)
    if device.type != "cpu":
        import comfy.model_management as mm
        mm.free_memory(plan.peak_bytes, device)
    swap = BlockSwap(loaded.model, n, device, pin_memory=swap_cfg.get("pin_memory", False))
    try:
        yield device
    finally:
        swap.remove()
        log.info(swap.summary())
        loaded.model.to(cb.offload_device())


@contextlib.contextmanager
def oom_advice(where: str, *models):
    """Turn a CUDA out-of-memory error into advice; offload the given LoadedDiTs first."""
    try:
        yield
    except torch.OutOfMemoryError as e:
        import traceback

        import comfy.model_management as mm
        traceback.clear_frames(e.__traceback__)  # drop the failed forward's activations first
        for m in models:
            if m is not None:
                m.model.to(cb.offload_device())
        mm.unload_all_models()  # what ComfyUI itself does on OOM, which our RuntimeError bypasses
        mm.soft_empty_cache()
        raise RuntimeError(OOM_ADVICE.format(where=where)) from e


def previewer(device=None):
    """ComfyUI's own latent previewer for Wan2.2 latents (honours --preview-method: none, auto /
    latent2rgb, taesd with models/vae_approx/taew2_2); None when previews are off."""
    import comfy.latent_formats
    import latent_preview
    return latent_preview.get_previewer(device or cb.torch_device(), comfy.latent_formats.Wan22())


def hooks_for(node_id, total: int, preview: bool = True):
    """happyhorse_core Hooks wired to the node's progress bar, latent preview and Cancel.

    The sampler's x0 is a model-space Wan2.2 latent [1, 48, T, h, w], which is the space ComfyUI's
    Wan22 latent format (and so its previewer) works in; the previewer shows latent frame 0. A preview
    that fails is reported once per run on the node and in the log, and the run goes on without it.
    """
    from happyhorse_core.sampling.pipeline import Hooks
    bar = cb.ComfyProgress(total, node_id=node_id)
    state = {"x0": None, "previewer": previewer() if preview else None, "failed": False}

    def on_preview(step, x0):
        state["x0"] = x0

    def on_progress(done, total_):
        img = None
        if state["previewer"] is not None and state["x0"] is not None and not state["failed"]:
            try:
                img = state["previewer"].decode_latent_to_preview_image("JPEG", state["x0"])
            except Exception as e:  # a preview must not fail the run, but the user is told why it is missing
                state["failed"] = True
                log.exception("HappyHorse: latent preview failed")
                cb.node_warning(node_id, f"latent preview failed ({type(e).__name__}: {e}); sampling goes on "
                                         "without previews")
        bar(done, total_, img)

    return Hooks(progress=on_progress, interrupt=cb.interrupt_check, preview=on_preview)


@contextlib.contextmanager
def node_warnings(node_id):
    """Collect the core's Python warnings (size rounded, image batch, ...) raised inside the block and show
    each one on the node and in the log, every run (the default warnings filter would show it once)."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield lambda message: cb.node_warning(node_id, message)
        finally:
            for w in caught:
                cb.node_warning(node_id, str(w.message))
