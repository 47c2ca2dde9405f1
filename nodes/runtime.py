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


def auto_blocks(model, device, run) -> int:
    """Block swap `auto`: resident blocks from the free VRAM now minus the run's activations (logged)."""
    from happyhorse_core.dit.memory_plan import activation_bytes, auto_blocks_on_device
    from happyhorse_core.dit.offload import module_bytes
    layers = model.block.layers
    if device.type == "cpu":
        log.info("HappyHorse: block swap auto: computing on the CPU, all %d blocks stay in RAM", len(layers))
        return len(layers)
    import comfy.model_management as mm
    sizes = [module_bytes(layer) for layer in layers]
    other = module_bytes(model) - sum(sizes)
    act = activation_bytes(model.config, run)
    mm.free_memory(sum(sizes) + other + act, device)  # evict other models first, as far as needed
    choice = auto_blocks_on_device(sizes, other, mm.get_free_memory(device), act)
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
    from happyhorse_core.dit.offload import BlockSwap, plan_block_swap
    layers = loaded.model.block.layers
    if swap_cfg.get("auto"):
        if run is None:
            raise ValueError("block swap auto needs the clip's token counts; this node does not pass them")
        n = auto_blocks(loaded.model, device, run)
    else:
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


def latent_preview(video_model_space: torch.Tensor):
    """Cheap RGB preview of latent frame 0: Wan2.2 latent -> RGB projection ([H, W, 3] in 0..1)."""
    import comfy.latent_formats
    from happyhorse_core.sampling.latents import video_from_model
    fmt = comfy.latent_formats.Wan22()
    raw = video_from_model(video_model_space[:, :, 0])  # [1, 48, h, w]
    factors = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32)  # [48, 3]
    rgb = torch.einsum("bchw,cr->bhwr", raw.float().cpu(), factors)
    bias = getattr(fmt, "latent_rgb_factors_bias", None)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float32)
    return ((rgb[0] + 1.0) / 2.0).clamp(0, 1)


def hooks_for(node_id, total: int, preview: bool = True):
    """happyhorse_core Hooks wired to the node's progress bar, preview and Cancel."""
    from happyhorse_core.sampling.pipeline import Hooks
    bar = cb.ComfyProgress(total, node_id=node_id)
    state = {"x0": None}

    def on_preview(step, x0):
        state["x0"] = x0

    def on_progress(done, total_):
        img = None
        if preview and state["x0"] is not None:
            try:
                img = latent_preview(state["x0"])
            except Exception as e:  # a preview must never fail the run
                log.debug("HappyHorse: preview skipped (%s)", e)
        bar(done, total_, img)

    return Hooks(progress=on_progress, interrupt=cb.interrupt_check, preview=on_preview)
