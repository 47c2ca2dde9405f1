"""What every compute node shares: placing the DiT for a run, out-of-memory advice, previews.

Memory rule (README "Memory"): without block swap the DiT is a normal ComfyUI model: the
sampler asks ComfyUI to load it (other models are evicted as needed) and "Unload models"
frees it. With block swap the pack owns placement: ComfyUI is asked to free the bytes the
resident blocks need, N blocks go to the GPU for the run, and everything returns to system RAM
afterwards, so the two mechanisms never move the same weights.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import traceback

import torch

from ..happyhorse_core.dit.compile import apply_compile
from ..happyhorse_core.dit.memory_plan import activation_bytes, auto_blocks_on_device, RunShape
from ..happyhorse_core.dit.offload import BlockSwap, module_bytes, plan_block_swap
from ..happyhorse_core.sampling.pipeline import Hooks

from . import comfy_bridge as cb, ram_plan
from .node_warnings import warn
from .native_model import build_patcher

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


def run_shape(latent_frames: int, latent_h: int, latent_w: int, audio_frames: int, text, cfg: bool) -> RunShape:
    """The token counts `placed` sizes block swap `auto` with; text rows = the longer of the prompt pair
    (`text`: a sampling.pipeline.TextConditioning, negative None without CFG)."""
    rows = max(t.shape[0] for t in (text.positive, text.negative) if t is not None)
    return RunShape.from_latents(latent_frames, latent_h, latent_w, audio_frames, rows, cfg=cfg)


@contextlib.contextmanager
def placed(loaded, run=None):
    """Put a LoadedDiT where it runs for the duration of the block; yields the compute device.

    `run` (memory_plan.RunShape, from run_shape) sizes the activations for block swap `auto`."""
    ram_plan.before_use(loaded, rewrap=build_patcher, unload=cb.unload_patcher)  # e.g. first-stage DiT before SR
    device = cb.torch_device()
    apply_compile(loaded.model, getattr(loaded, "compile", None))  # HappyHorse Compile node, or eager
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


# Messages of memory failures that are not torch.OutOfMemoryError (lower case, substring match).
_GPU_MEMORY_MESSAGES = ("out of memory", "cuda error: out of memory", "cublas_status_alloc_failed",
                        "hip out of memory", "mps backend out of memory", "allocation failed")
_HOST_MEMORY_MESSAGES = ("defaultcpuallocator: can't allocate memory", "not enough memory",
                         "cannot allocate memory", "std::bad_alloc")
_DEVICE_MESSAGES = ("expected all tensors to be on the same device", "is not on the expected device",
                    "expected device", "device mismatch")
DEVICE_ADVICE = ("A model's weights and its inputs were on different devices in {where} (a partial or "
                 "interrupted load). Click 'Unload models' (or 'Free model and node cache') and queue the prompt "
                 "again; if it repeats, report it with the console log. ")
RAM_ADVICE = ("Out of system memory (RAM) in {where}. Try, in this order: weight_dtype fp8_e4m3fn_scaled on the "
              "model and text encoder loaders; close other programs or add swap space; run the text encoder and "
              "super-resolution in separate queue runs. ")


def memory_failure(e: BaseException) -> str | None:
    """'gpu', 'ram' or 'device' when `e` is a memory/placement failure, else None."""
    if isinstance(e, torch.OutOfMemoryError):
        return "gpu"
    if isinstance(e, MemoryError):
        return "ram"
    if not isinstance(e, RuntimeError):
        return None
    msg = str(e).lower()
    if any(m in msg for m in _HOST_MEMORY_MESSAGES):
        return "ram"
    if any(m in msg for m in _GPU_MEMORY_MESSAGES):
        return "gpu"
    if any(m in msg for m in _DEVICE_MESSAGES):
        return "device"
    return None


def advice(kind: str, where: str) -> str:
    """The pack's advice for a memory failure of `kind` (memory_failure) in `where`."""
    gpu = OOM_ADVICE.format(where=where)
    if kind == "ram":
        return RAM_ADVICE.format(where=where) + "On the GPU side: " + gpu
    if kind == "device":
        return DEVICE_ADVICE.format(where=where) + gpu
    return gpu


def release_after_failure(*models) -> None:
    """Free what a failed run held: offload the given LoadedDiTs, unload every ComfyUI model, empty caches."""
    for m in models:
        if m is not None:
            try:
                m.model.to(cb.offload_device())
            except Exception as exc:  # a half-moved model must not hide the advice
                log.warning("HappyHorse: could not offload %s after a memory failure: %s", type(m.model).__name__, exc)
    gc.collect()
    cb.unload_all_models()  # what ComfyUI itself does on OOM, which our RuntimeError bypasses


@contextlib.contextmanager
def oom_advice(where: str, *models):
    """Turn an out-of-memory error (GPU or RAM), an allocation failure or a device mismatch into the pack's
    advice (a RuntimeError chained to the original); frees what the failed run held so the next prompt runs."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        kind = memory_failure(e)
        if kind is None:
            raise
        traceback.clear_frames(e.__traceback__)  # drop the failed forward's activations first
        release_after_failure(*models)
        raise RuntimeError(advice(kind, where)) from e


def hooks_for(node_id, total: int, preview: bool = True):
    """happyhorse_core Hooks wired to the node's progress bar, latent preview and Cancel.

    The sampler's x0 is a model-space Wan2.2 latent [1, 48, T, h, w], which is the space ComfyUI's
    Wan22 latent format (and so its previewer, cb.latent_previewer) works in; the previewer shows latent
    frame 0 and follows --preview-method. A preview that fails is reported once per run on the node and
    in the log (with its traceback), and the run goes on without it.
    """
    bar = cb.ComfyProgress(total, node_id=node_id)
    state = {"x0": None, "previewer": cb.latent_previewer() if preview else None, "failed": False}

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
                warn(node_id, f"latent preview failed ({type(e).__name__}: {e}); sampling goes on without "
                              "previews")
        bar(done, total_, img)

    return Hooks(progress=on_progress, interrupt=cb.interrupt_check, preview=on_preview)
