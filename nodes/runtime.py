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
import traceback

import torch

from ..happyhorse_core.dit.memory_plan import activation_bytes, auto_blocks_on_device
from ..happyhorse_core.dit.offload import BlockSwap, module_bytes, plan_block_swap
from ..happyhorse_core.sampling.latents import video_from_model
from ..happyhorse_core.sampling.pipeline import Hooks

from . import comfy_bridge as cb

log = logging.getLogger("HappyHorse")

OOM_ADVICE = ("Out of GPU memory in {where}. Try, in this order: weight_dtype fp8_e4m3fn_scaled with fp8_scope "
              "'shared' on the model loader; a HappyHorse Block Swap node with fewer blocks_on_device (e.g. 20, "
              "then 10); a smaller size or fewer seconds (generate at 256p and use HappyHorse Super-Resolution).")


def auto_blocks(model, device, run) -> int:
    """Block swap `auto`: resident blocks from the free VRAM now minus the run's activations (logged)."""
    layers = model.block.layers
    if device.type == "cpu":
        log.info("HappyHorse: block swap auto: computing on the CPU, all %d blocks stay in RAM", len(layers))
        return len(layers)
    sizes = [module_bytes(layer) for layer in layers]
    other = module_bytes(model) - sum(sizes)
    act = activation_bytes(model.config, run)
    cb.free_memory(sum(sizes) + other + act, device)  # evict other models first, as far as needed
    choice = auto_blocks_on_device(sizes, other, cb.free_bytes(device), act)
    log.info("HappyHorse: %s (%d tokens%s)", choice.reason, run.tokens, ", CFG" if run.cfg else "")
    return choice.blocks_on_device


@contextlib.contextmanager
def placed(loaded, run=None):
    """Put a LoadedDiT where it runs for the duration of the block; yields the compute device.

    `run` (memory_plan.RunShape) sizes the activations for block swap `auto`."""
    device = cb.torch_device()
    swap_cfg = loaded.block_swap
    if not swap_cfg:
        cb.load_models([loaded.patcher])
        yield device
        return
    layers = loaded.model.block.layers
    if swap_cfg.auto:
        if run is None:
            raise ValueError("block swap auto needs the clip's token counts; this node does not pass them")
        n = auto_blocks(loaded.model, device, run)
    else:
        n = min(swap_cfg.blocks_on_device, len(layers))  # N >= block count: everything resident
    plan = plan_block_swap(layers, n)
    if device.type != "cpu":
        cb.free_memory(plan.peak_bytes, device)
    swap = BlockSwap(loaded.model, n, device, pin_memory=swap_cfg.pin_memory)
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
        traceback.clear_frames(e.__traceback__)  # drop the failed forward's activations first
        for m in models:
            if m is not None:
                m.model.to(cb.offload_device())
        cb.unload_all_models()  # what ComfyUI itself does on OOM, which our RuntimeError bypasses
        raise RuntimeError(OOM_ADVICE.format(where=where)) from e


def latent_preview(video_model_space: torch.Tensor):
    """Cheap RGB preview of latent frame 0: Wan2.2 latent -> RGB projection ([H, W, 3] in 0..1)."""
    factors, bias = cb.wan22_rgb_factors()  # [48, 3], [3] or None
    raw = video_from_model(video_model_space[:, :, 0])  # [1, 48, h, w]
    rgb = torch.einsum("bchw,cr->bhwr", raw.float().cpu(), factors)
    if bias is not None:
        rgb = rgb + bias
    return ((rgb[0] + 1.0) / 2.0).clamp(0, 1)


def hooks_for(node_id, total: int, preview: bool = True):
    """happyhorse_core Hooks wired to the node's progress bar, preview and Cancel."""
    bar = cb.ComfyProgress(total, node_id=node_id)
    state = {"x0": None, "preview_failed": False}

    def on_preview(step, x0):
        state["x0"] = x0

    def on_progress(done, total_):
        img = None
        if preview and state["x0"] is not None and not state["preview_failed"]:
            try:
                img = latent_preview(state["x0"])
            except Exception as e:  # a preview must never fail the run: say so once, then run without it
                state["preview_failed"] = True
                log.warning("HappyHorse: latent preview failed (%s: %s); sampling continues without previews",
                            type(e).__name__, e)
        bar(done, total_, img)

    return Hooks(progress=on_progress, interrupt=cb.interrupt_check, preview=on_preview)
