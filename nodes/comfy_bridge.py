"""The pack's ONE comfy-aware helper module: everything the node files need from ComfyUI goes through here.

Why: happyhorse_core never imports comfy; node files stay thin and import from this module, so it
is the single place to adapt when ComfyUI's internals move. comfy / folder_paths are imported
inside each function, and `io` / `ComfyExtension` (the V3 node API, needed at class-definition
time) are resolved on first attribute access (module `__getattr__`), so the pure helpers (path
checks against given roots) also import -- and are unit-tested -- without ComfyUI. The tensor
layout conversions between ComfyUI's IMAGE / AUDIO / LATENT and the core are in comfy_layouts.py.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Optional

import torch

from .model_files import group_sharded, resolve_in_roots  # noqa: F401  (resolve_in_roots: pure, re-exported)

MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "checkpoints", "loras")
HAPPYHORSE_SUBFOLDER = "happyhorse"   # models/diffusion_models/happyhorse/ holds the pack's DiT files


_V3_NAMES = ("io", "ComfyExtension")


def __getattr__(name: str) -> Any:
    """`io` and `ComfyExtension` from comfy_api.latest, imported when a node module first asks for them."""
    if name in _V3_NAMES:
        import comfy_api.latest as v3
        return getattr(v3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- devices
def torch_device() -> torch.device:
    """Where ComfyUI wants compute (cuda:N, mps, or cpu with --cpu)."""
    import comfy.model_management as mm
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where ComfyUI parks diffusion-model weights when they are not in use."""
    import comfy.model_management as mm
    return mm.unet_offload_device()


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, LATENT, AUDIO tensors) should live."""
    import comfy.model_management as mm
    return mm.intermediate_device()


def attention_choice(requested: str, sage_flag: Optional[bool] = None, flash_flag: Optional[bool] = None) -> str:
    """The pack's plain attention choice for the core: an explicit widget choice wins; `auto` follows
    ComfyUI's --use-sage-attention / --use-flash-attention (read from comfy.model_management unless
    the flags are given), else stays `auto` (flash-attn if installed for bf16, else SDPA)."""
    if requested != "auto":
        return requested
    if sage_flag is None or flash_flag is None:
        import comfy.model_management as mm
        sage_flag = bool(getattr(mm, "sage_attention_enabled", lambda: False)())
        flash_flag = bool(getattr(mm, "flash_attention_enabled", lambda: False)())
    return "sage" if sage_flag else "flash" if flash_flag else "auto"


def compile_cache_dir() -> str:
    """A persistent folder for torch.compile's on-disk caches: ComfyUI's user directory, so compiled
    HappyHorse graphs survive restarts (inductor/triton caches otherwise live under /tmp). Only the path:
    the core's happyhorse_core.dit.compile.use_cache_dir creates it when compiling starts."""
    import folder_paths
    return os.path.join(folder_paths.get_user_directory(), "happyhorse", "torch_compile_cache")


# ----------------------------------------------------------------------------- model files
def list_models(folder: str) -> list[str]:
    """Files ComfyUI knows in a model folder ("diffusion_models", "text_encoders", "vae", "checkpoints"), as
    the relative names loaders show (subfolders included, e.g. "happyhorse/dit_fp8.safetensors"); each
    sharded Hugging Face folder is one entry "<folder>/ (sharded)" (see model_files)."""
    import folder_paths
    _check_folder(folder)
    names = sorted(folder_paths.get_filename_list(folder))
    return group_sharded(names, folder_paths.get_folder_paths(folder))


def list_loras() -> list[str]:
    """LoRA files in models/loras (relative names)."""
    return list_models("loras")


def list_happyhorse_models() -> list[str]:
    """diffusion_models files, those in the happyhorse/ subfolder first."""
    names = list_models("diffusion_models")
    ours = [n for n in names if n.replace("\\", "/").startswith(HAPPYHORSE_SUBFOLDER + "/")]
    return ours + [n for n in names if n not in ours]


def model_path(folder: str, name: str) -> str:
    """Absolute path of `name` (a file, or a "<folder>/ (sharded)" entry) in ComfyUI's model folder
    `folder` (all its configured roots). Links are followed, not resolved (model_files explains why).
    ValueError for names that climb out of the folder; FileNotFoundError when it is not there."""
    import folder_paths
    _check_folder(folder)
    return resolve_in_roots(name, folder_paths.get_folder_paths(folder), folder)


def _check_folder(folder: str) -> None:
    if folder not in MODEL_FOLDERS:
        raise ValueError(f"unknown model folder {folder!r}: expected one of {MODEL_FOLDERS}")


# ----------------------------------------------------------------------------- progress / interrupt
class ComfyProgress:
    """Progress callable for happyhorse_core loops: progress(done, total, preview=None).
    preview: None, an IMAGE-like tensor [H, W, 3] / [1, H, W, 3] in 0..1, a PIL image, or ComfyUI's
    ("JPEG", PIL.Image, max_size) tuple. Updates the node's bar in the UI (node_id = its unique id)."""

    def __init__(self, total: int, node_id: Optional[str] = None, preview_size: int = 512):
        import comfy.utils
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.preview_size = preview_size

    def __call__(self, done: int, total: int, preview: Any = None) -> None:
        self.bar.update_absolute(done, total, self._preview(preview))

    def _preview(self, preview: Any):
        if preview is None or isinstance(preview, tuple):
            return preview
        if isinstance(preview, torch.Tensor):
            from PIL import Image
            img = preview.detach().float().reshape(-1, *preview.shape[-3:])[0].clamp(0, 1)   # [H, W, 3]
            preview = Image.fromarray((img * 255).round().to(torch.uint8).cpu().numpy())
        return ("JPEG", preview, self.preview_size)


def interrupt_check() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (call inside loops)."""
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()


def interrupt_requested() -> bool:
    """True if the user pressed Cancel, without raising: consumes ComfyUI's interrupt flag as interrupt_check does."""
    import comfy.model_management as mm
    try:
        mm.throw_exception_if_processing_interrupted()
    except mm.InterruptProcessingException:
        return True
    return False


def interrupt_exception() -> type:
    """ComfyUI's InterruptProcessingException class (what interrupt_check and progress hooks raise on Cancel)."""
    import comfy.model_management as mm
    return mm.InterruptProcessingException


# ----------------------------------------------------------------------------- partial loading (nodes/comfy_ops.py)
def cast_bias_weight(module: torch.nn.Module, dtype: torch.dtype, device: torch.device,
                     bias_dtype: Optional[torch.dtype]) -> tuple:
    """comfy.ops.cast_bias_weight(offloadable=True): `module`'s weight / bias on `device` with its weight
    patches applied; returns (weight, bias, offload stream) for uncast_bias_weight."""
    import comfy.ops
    return comfy.ops.cast_bias_weight(module, dtype=dtype, device=device, bias_dtype=bias_dtype, offloadable=True)


def uncast_bias_weight(module: torch.nn.Module, weight: torch.Tensor, bias: Optional[torch.Tensor], stream) -> None:
    """Hand a cast_bias_weight result back to ComfyUI (the offload stream may reuse its buffer)."""
    import comfy.ops
    comfy.ops.uncast_bias_weight(module, weight, bias, stream)


def default_vae_dtype() -> torch.dtype:
    """The dtype ComfyUI picks for a VAE on its VAE device: bf16 where the device runs it fast, else fp32
    (the CPU); --fp32-vae / --bf16-vae / --fp16-vae win, as for ComfyUI's own VAEs."""
    import comfy.model_management as mm
    return mm.vae_dtype(mm.vae_device(), [torch.bfloat16])


def stochastic_round_seed(w: torch.Tensor, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """comfy.float.stochastic_rounding with an explicit seed (RNE for bf16/fp16, seeded for fp8)."""
    import comfy.float
    return comfy.float.stochastic_rounding(w, dtype, seed=seed)


def stochastic_round(w: torch.Tensor, dtype: torch.dtype, key: Optional[str]) -> torch.Tensor:
    """`w` rounded to `dtype` as ModelPatcher rounds a patched weight: comfy.float.stochastic_rounding seeded
    with string_to_seed(key) (seed 0 without a key)."""
    from comfy.model_patcher import string_to_seed
    return stochastic_round_seed(w, dtype, string_to_seed(key) if key is not None else 0)


# ----------------------------------------------------------------------------- model management
def wrap_model(module: torch.nn.Module, size_bytes: Optional[int] = None):
    """ModelPatcher around a plain nn.Module so ComfyUI's memory manager can load / evict it
    (load_models([patcher]) before use). size_bytes defaults to the parameters' + buffers' bytes.

    The module's weight-holding layers get ComfyUI's low-VRAM attributes (nodes/comfy_ops.py), so a
    partial load casts the offloaded ones to the compute device per call; callers pass the compute
    device (torch_device()) to the module, never read it from a weight."""
    import comfy.model_management as mm
    import comfy.model_patcher

    from .comfy_ops import enable_partial_load
    enable_partial_load(module)
    size = mm.module_size(module) if size_bytes is None else int(size_bytes)
    return comfy.model_patcher.ModelPatcher(module, load_device=torch_device(),
                                            offload_device=offload_device(), size=size)


def native_vae(state_dict: dict):
    """ComfyUI's VAE built from a bare state dict (as its VAE Loader does), invalid files refused."""
    import comfy.sd
    vae = comfy.sd.VAE(sd=state_dict)
    vae.throw_exception_if_invalid()
    return vae


def unload_patcher(patcher) -> None:
    """Take one ModelPatcher out of ComfyUI's loaded models (weights back to the offload device)."""
    import comfy.model_management as mm
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is patcher:
            mm.current_loaded_models.pop(i).model_unload()


def load_models(patchers: list, memory_required: int = 0) -> None:
    """Ask ComfyUI to make room for and load these patchers onto torch_device()."""
    import comfy.model_management as mm
    mm.load_models_gpu(patchers, memory_required=memory_required)


def free_memory(size_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to evict models until `size_bytes` are free on `device`."""
    import comfy.model_management as mm
    mm.free_memory(size_bytes, device)


def free_bytes(device: torch.device) -> int:
    """Memory ComfyUI reports free on `device` (its own cache included)."""
    import comfy.model_management as mm
    return mm.get_free_memory(device)


def unload_all_models() -> None:
    """What ComfyUI itself does after an out-of-memory error: unload every model, empty the cache."""
    import comfy.model_management as mm
    mm.unload_all_models()
    mm.soft_empty_cache()


def resize_image(rgb: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> [B, height, width, 3]: ComfyUI's lanczos resize with a center crop, in 0..1."""
    import comfy.utils
    out = comfy.utils.common_upscale(rgb.movedim(-1, 1), width, height, "lanczos", "center")
    return out.movedim(1, -1).clamp(0, 1)


# ----------------------------------------------------------------------------- video files, user folder, text
def video_from_bytes(data: bytes):
    """An encoded video file (e.g. a downloaded mp4) -> ComfyUI VIDEO, read from memory; SaveVideo copies
    its streams without re-encoding."""
    import io as _io

    from comfy_api.latest import InputImpl
    return InputImpl.VideoFromFile(_io.BytesIO(data))


def video_to_mp4_bytes(video) -> bytes:
    """A ComfyUI VIDEO -> H.264 mp4 bytes, in memory (streams copied when they already are mp4/H.264)."""
    import io as _io

    from comfy_api.latest import Types
    buf = _io.BytesIO()
    video.save_to(buf, format=Types.VideoContainer.MP4, codec=Types.VideoCodec.H264)
    return buf.getvalue()


def user_directory() -> str:
    """ComfyUI's user folder (ComfyUI/user, or --user-directory / <base-directory>/user)."""
    import folder_paths
    return folder_paths.get_user_directory()


def temp_directory() -> str:
    import folder_paths
    return folder_paths.get_temp_directory()


def progress_text(node_id: Optional[str], text: str) -> None:
    """Show a line of text on the node (ComfyUI's progress text); silently nothing without a server."""
    try:
        from server import PromptServer
        PromptServer.instance.send_progress_text(text, node_id)
    except (ImportError, AttributeError):
        pass


# ----------------------------------------------------------------------------- native VAEs, previews
@contextlib.contextmanager
def vae_dtype(vae, dtype: Optional[torch.dtype]):
    """Run a native ComfyUI VAE in `dtype` for the block (None: as loaded), then restore it.

    The reference runs the Stable Audio VAE in fp32; ComfyUI may have loaded it in fp16/bf16. The VAE
    object casts its inputs to `vae.vae_dtype` and runs `vae.first_stage_model`, so both are switched."""
    old = getattr(vae, "vae_dtype", None)
    model = getattr(vae, "first_stage_model", None)
    if dtype is None or old is None or model is None or old == dtype:
        yield vae
        return
    model.to(dtype)
    vae.vae_dtype = dtype
    try:
        yield vae
    finally:
        model.to(old)
        vae.vae_dtype = old


def latent_previewer(device: Optional[torch.device] = None):
    """ComfyUI's own previewer for Wan2.2 latents (it follows --preview-method: none, auto / latent2rgb, taesd
    with models/vae_approx/taew2_2); None when previews are off. Takes model-space latents [B, 48, T, h, w]."""
    import comfy.latent_formats
    import latent_preview
    return latent_preview.get_previewer(device or torch_device(), comfy.latent_formats.Wan22())
