"""HappyHorse as a native ComfyUI MODEL: a `comfy.model_base.BaseModel` around the loaded SandwichDiT.

Why a BaseModel: with it the DiT travels on MODEL sockets, so core nodes (LoraLoaderModelOnly,
ModelSamplingSD3, SamplerCustomAdvanced with any GUIDER / SAMPLER / SIGMAS, EasyCache,
TorchCompileModel) and MODEL-based packs can touch it. The core DiT stays ComfyUI-free: this
module only adapts it (COMFYUI_NATIVE.md §2-3).

What ComfyUI sees:
  * `diffusion_model` is the unmodified SandwichDiT, so weight keys are
    `diffusion_model.<published key>` (LoRA key maps work on them) and the easy-path sampler
    shares the same module and the same ModelPatcher (one patcher per module).
  * flow model-sampling (ModelSamplingDiscreteFlow + CONST), shift 5, multiplier 1000;
    ModelSamplingSD3 replaces it with another shift.
  * the joint latent is a NestedTensor [video [B, 48, T, h, w], audio [B, 64, F]] (raw Wan2.2 /
    Stable Audio spaces). CFGGuider.sample packs it to [B, 1, N], N = 48·T·h·w + 64·F, and an
    OUTER_SAMPLE wrapper stores the part shapes on the model (`latent_shapes`). Everything the
    model receives and returns is that packed tensor: the network unpacks per row, runs the DiT
    on [video | audio | text] tokens exactly as the pack's Denoiser does, and packs the velocity.
  * text conds are CONDRegular [1, n, 3584] (never padded to a common length: text tokens are
    RoPE-positioned queries/keys of the single-stream DiT), so prompts of different lengths
    run as separate forwards, as in the pack.
  * `manual_cast_dtype = fp32`: latents and text reach the DiT in fp32, as the pack feeds them.
  * with transformer_options["hh_return_velocity"] the model returns the raw velocity instead
    of x0 (the HappyHorse guider mixes CFG on velocities, as the pack does, for bit parity).
"""
from __future__ import annotations

import functools
import logging
import math
from types import SimpleNamespace
from typing import Optional

import torch

from ..happyhorse_core.dit.sequence import pack, unpack
from ..happyhorse_core.geometry import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS
from ..happyhorse_core.sampling.latents import video_from_model, video_to_model

log = logging.getLogger("HappyHorse")

DEFAULT_SHIFT = 5.0
WRAPPER_KEY = "happyhorse"
RETURN_VELOCITY = "hh_return_velocity"  # transformer_options flag set by the HappyHorse guider
TEXT_TOKENS_GUESS = 512  # prompt length assumed by the memory estimate when no cond shape is known
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def split_packed(x: torch.Tensor, shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed [B, 1, N] -> (video [B, 48, T, h, w], audio [B, 64, F]) views."""
    video_shape, audio_shape = check_shapes(shapes)
    nv = math.prod(video_shape[1:])
    video = x[:, 0, :nv].reshape(x.shape[0], *video_shape[1:])
    audio = x[:, 0, nv:].reshape(x.shape[0], *audio_shape[1:])
    return video, audio


def join_packed(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(video [B, ...], audio [B, ...]) -> packed [B, 1, N] (ComfyUI's pack_latents layout)."""
    b = video.shape[0]
    return torch.cat([video.reshape(b, 1, -1), audio.reshape(b, 1, -1)], dim=-1)


def check_shapes(shapes) -> tuple[torch.Size, torch.Size]:
    """The [video, audio] part shapes of a HappyHorse joint latent, validated."""
    if shapes is None or len(shapes) != 2:
        got = "a single latent" if shapes is not None and len(shapes) == 1 else f"{shapes!r}"
        raise ValueError(f"the HappyHorse MODEL samples the joint video+audio latent, got {got}: connect the "
                         "LATENT of 'HappyHorse Pack AV Latent' to the sampler")
    video, audio = (torch.Size(s) for s in shapes)
    if len(video) != 5 or video[1] != VIDEO_LATENT_CHANNELS or len(audio) != 3 or audio[1] != AUDIO_LATENT_CHANNELS:
        raise ValueError(f"joint latent parts must be video [B, 48, T, h, w] then audio [B, 64, F], got "
                         f"{list(video)} and {list(audio)}: build the LATENT with 'HappyHorse Pack AV Latent'")
    return video, audio



@functools.cache
def comfy_classes() -> SimpleNamespace:
    """The ComfyUI subclasses (defined on first use: comfy is imported only inside functions here)."""
    import comfy.conds
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.patcher_extension as pe
    import comfy.supported_models_base
    import comfy.utils

    class HHLatentFormat(comfy.latent_formats.LatentFormat):
        """Wan2.2 48-channel video latents (the audio part is not normalised). process_in/out act on a
        bare video latent [B, 48, T, h, w]; the model applies them to the video part of packed latents."""

        latent_channels = VIDEO_LATENT_CHANNELS
        latent_dimensions = 3
        latent_rgb_factors = None  # no previewer on packed latents
        taesd_decoder_name = None

        def process_in(self, latent: torch.Tensor) -> torch.Tensor:
            return video_to_model(latent)

        def process_out(self, latent: torch.Tensor) -> torch.Tensor:
            return video_from_model(latent)

    class HHModelConfig(comfy.supported_models_base.BASE):
        """No detection rule (a pack cannot add one); built only around an already-loaded DiT."""

        unet_config = {"disable_unet_model_creation": True, "image_model": "happyhorse"}
        unet_extra_config: dict = {}
        sampling_settings = {"shift": DEFAULT_SHIFT, "multiplier": 1000}
        latent_format = HHLatentFormat
        supported_inference_dtypes = [torch.bfloat16, torch.float32]
        manual_cast_dtype = torch.float32  # latents / text stay fp32 on the way in (parity with the pack)

    class HHBaseModel(comfy.model_base.BaseModel):
        """BaseModel whose `diffusion_model` is a happyhorse_core SandwichDiT (see the module docstring)."""

        def __init__(self, dit: torch.nn.Module, device=None) -> None:
            config = HHModelConfig(HHModelConfig.unet_config)
            super().__init__(config, model_type=comfy.model_base.ModelType.FLOW, device=device)
            self.diffusion_model = dit
            self.latent_shapes: Optional[list] = None  # set per sampling run by the OUTER_SAMPLE wrapper

        # -- what ComfyUI reads --------------------------------------------------------------------
        def get_dtype(self) -> torch.dtype:
            """Storage dtype of the block weights (bf16, or fp8 for fp8 files)."""
            dit = self.diffusion_model
            dit = getattr(dit, "_orig_mod", dit)  # TorchCompileModel swaps in an OptimizedModule
            for layer in dit.block.layers:
                return layer.attention.linear_qkv.weight.dtype
            return torch.float32

        def extra_conds(self, **kwargs) -> dict:
            out = {}
            text = kwargs.get("cross_attn", None)
            if text is not None:
                if text.ndim != 3:
                    raise ValueError(f"HappyHorse text conditioning must be [1, tokens, 3584], got {list(text.shape)}: "
                                     "use 'HappyHorse Conditioning Split' on a HappyHorse Text Encode output")
                out["c_crossattn"] = comfy.conds.CONDRegular(text)
            return out

        def extra_conds_shapes(self, **kwargs) -> dict:
            text = kwargs.get("cross_attn", None)
            return {} if text is None else {"c_crossattn": list(text.shape)}

        def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
            """Masked parts (first frame, fixed voice) are fed clean, as the pack does."""
            return latent_image

        def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
            video, audio = split_packed(latent, self.latent_shapes)
            return join_packed(video_to_model(video), audio.float())

        def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
            video, audio = split_packed(latent, self.latent_shapes)
            return join_packed(video_from_model(video), audio.float())

        def memory_required(self, input_shape, cond_shapes={}) -> float:
            """Peak bytes of one DiT forward (rows run one after another, so the batch does not multiply it)."""
            cfg = getattr(getattr(self.diffusion_model, "_orig_mod", self.diffusion_model), "config")
            tokens = max((int(s[-2]) for s in cond_shapes.get("c_crossattn", []) or []), default=TEXT_TOKENS_GUESS)
            if self.latent_shapes is not None and len(self.latent_shapes) == 2:
                video, audio = self.latent_shapes
                tokens += video[2] * (video[3] // 2) * (video[4] // 2) + audio[2]
            else:  # no shapes yet: count packed scalars as video tokens of 192 values
                tokens += math.prod(input_shape[2:]) // cfg.video_in_channels
            mlp = max(cfg.gelu7_intermediate, 2 * cfg.swiglu7_intermediate)
            # fp32 residual copies + bf16 MLP and QKV activations
            per_token = 4 * 4 * cfg.hidden_size + 2 * 2 * mlp + 2 * 2 * cfg.qkv_out
            return float(tokens * per_token)

        # -- the forward -------------------------------------------------------------------------
        def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
            if c_concat is not None or control is not None:
                raise ValueError("HappyHorse does not take concat latents or ControlNets; first frames and voices go "
                                 "through 'HappyHorse Pack AV Latent'")
            if c_crossattn is None:
                raise ValueError("HappyHorse needs a text conditioning: connect 'HappyHorse Conditioning Split'")
            sigma = t
            xc = self.model_sampling.calculate_input(sigma, x).to(self.manual_cast_dtype)
            context = mm.cast_to_device(c_crossattn, xc.device, self.manual_cast_dtype)
            timestep = self.model_sampling.timestep(t).float()
            executor = pe.WrapperExecutor.new_class_executor(
                self._run_dit, self, pe.get_all_wrappers(pe.WrappersMP.DIFFUSION_MODEL, transformer_options))
            velocity = executor.execute(xc, timestep, context, transformer_options).float()
            if transformer_options.get(RETURN_VELOCITY, False):
                return velocity
            return self.model_sampling.calculate_denoised(sigma, velocity, x)

        def _run_dit(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                     transformer_options: dict) -> torch.Tensor:
            """Packed latents [B, 1, N] + text [B, n, Dt] -> packed velocity [B, 1, N] (fp32).

            Rows run one at a time, each exactly as happyhorse_core's Denoiser runs a sample (the
            DiT has no timestep input: the noise level is read from the latents)."""
            video, audio = split_packed(x, self.latent_shapes)
            dit = self.diffusion_model
            style = getattr(dit, "_orig_mod", dit).config.coords_style
            outs = []
            for b in range(x.shape[0]):
                v_in = video[b:b + 1].contiguous()  # [1, 48, T, h, w]
                a_in = audio[b:b + 1].transpose(1, 2).contiguous()  # [1, F, 64] (DiT layout)
                seq = pack(v_in, a_in, context[b], style=style)
                dev = x.device
                v_tok, a_tok = dit(seq.video.to(dev), seq.audio.to(dev), context[b].to(dev, torch.float32),
                                   seq.coords.to(dev), seq.tokens_per_frame)
                v, a = unpack(v_tok, a_tok, seq)  # [1, 48, T, h, w], [1, F, 64]
                outs.append(join_packed(v, a.transpose(1, 2)))
            return torch.cat(outs, dim=0)



    class FetchTimePatch(comfy.model_patcher.LowVramPatch):
        """A weight patch (LoRA) applied when the layer fetches its weight, not merged into the stored one."""


    class HHModelPatcher(comfy.model_patcher.ModelPatcher):
        """ModelPatcher that never merges patches into fp8 weights.

        ComfyUI merges a LoRA into a fully loaded weight once, in place. For fp8 storage that bakes the
        patch into the fp8 codes; here the stored fp8 tensor stays as loaded and the patch joins the
        layer's `weight_function`, so the weight-fetch step (nodes/comfy_ops.py) applies it to the WHOLE
        stacked weight in fp32 on every fetch and rounds it like a full load does (same seed), before
        the layer slices experts. bf16/fp32 weights are merged as usual. `clone()` keeps the class."""

        def patch_weight_to_device(self, key, device_to=None, inplace_update=False):
            if key in self.patches:
                weight, set_func, convert_func = comfy.model_patcher.get_key_weight(self.model, key)
                if weight is not None and weight.dtype in FP8_DTYPES:
                    module = comfy.utils.get_attr(self.model, key.rsplit(".", 1)[0])
                    if not any(isinstance(f, FetchTimePatch) and f.key == key for f in module.weight_function):
                        module.weight_function.insert(0, FetchTimePatch(key, self.patches, convert_func, set_func))
                    return
            return super().patch_weight_to_device(key, device_to=device_to, inplace_update=inplace_update)

        def unpatch_model(self, device_to=None, unpatch_weights=True):
            if unpatch_weights:
                for m in self.model.modules():
                    functions = m.__dict__.get("weight_function")
                    if functions:
                        m.weight_function = [f for f in functions if not isinstance(f, FetchTimePatch)]
            return super().unpatch_model(device_to=device_to, unpatch_weights=unpatch_weights)

    return SimpleNamespace(HHLatentFormat=HHLatentFormat, HHModelConfig=HHModelConfig, HHBaseModel=HHBaseModel,
                           FetchTimePatch=FetchTimePatch, HHModelPatcher=HHModelPatcher)


def _outer_sample_wrapper(executor, *args, **kwargs):
    """Hands the joint latent's part shapes to the model for one sampling run."""
    model = executor.class_obj.model_patcher.model
    shapes = kwargs.get("latent_shapes")
    check_shapes(shapes)
    model.latent_shapes = [torch.Size(s) for s in shapes]  # kept after the run: denoised_output needs them
    return executor(*args, **kwargs)


def build_patcher(dit: torch.nn.Module):
    """The one ModelPatcher of a loaded DiT: a MODEL for core nodes, and what the easy-path sampler
    loads (`load_models_gpu`) before running `patcher.model.diffusion_model`. The DiT's weight hosts
    get ComfyUI's low-VRAM attributes (partial loading, fetch-time patches)."""
    from .comfy_ops import enable_partial_load
    enable_partial_load(dit)
    import comfy.model_management as mm
    import comfy.patcher_extension as pe
    c = comfy_classes()
    offload = mm.unet_offload_device()
    model = c.HHBaseModel(dit, device=offload)
    model.eval()
    patcher = c.HHModelPatcher(model, load_device=mm.get_torch_device(), offload_device=offload)
    patcher.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    return patcher


def is_happyhorse(patcher) -> bool:
    return isinstance(getattr(patcher, "model", None), comfy_classes().HHBaseModel)


def require_happyhorse(patcher, node: str):
    if not is_happyhorse(patcher):
        raise ValueError(f"{node} needs a HappyHorse MODEL (from 'HappyHorse Model Loader' -> 'HappyHorse To "
                         f"MODEL'), got {type(getattr(patcher, 'model', patcher)).__name__}")
    return patcher.model
