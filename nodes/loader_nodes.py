"""Loader nodes: the HappyHorse DiT, the T5Gemma text encoder and the Turbo-VAED decoder.

Files come from ComfyUI's standard model folders; nothing is ever downloaded. A sharded Hugging
Face folder is one list entry, "<folder>/ (sharded)" (a shard its index names still stands for the
folder); symlinks are followed as ComfyUI core does (nodes/model_files.py).
"""
from __future__ import annotations

import logging
import os

from ..happyhorse_core.decoders.turbo_loading import load_turbo_vaed
from ..happyhorse_core.dit.attention import BACKENDS
from ..happyhorse_core.dit.config import VARIANTS
from ..happyhorse_core.dit.ops import FP8_SCOPES, WEIGHT_DTYPES
from ..happyhorse_core.text.loading import load_encoder, load_text_stack, WEIGHT_DTYPES as TEXT_WEIGHT_DTYPES
from ..happyhorse_core.weights.loading import load_dit
from ..happyhorse_core.weights.sao_vae import read_sao_vae

from . import comfy_bridge as cb
from . import ram_plan
from .comfy_bridge import io
from .model_files import checkpoint_target
from .native_model import build_patcher
from .runtime import oom_advice
from .types import (BlockSwapConfig, CATEGORY, HHBlockSwap, HHModel, HHTextEncoder, HHTurboVAED, LoadedDiT,
                    LoadedTextEncoder, LoadedTurboVAED)

log = logging.getLogger("HappyHorse")

VARIANT_CHOICES = ["auto", *VARIANTS]
DTYPE_CHOICES = list(WEIGHT_DTYPES)
ATTENTION_CHOICES = list(BACKENDS)


def disk_bytes(path: str) -> int:
    """Bytes of the .safetensors file(s) at `path` (a file, or a folder's files): the RAM a load needs at most."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.endswith(".safetensors"))
    return os.path.getsize(path) if os.path.isfile(path) else 0


def _options(choices: list[str], fallback: str) -> list[str]:
    return choices or [fallback]


class ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseModelLoader",
            display_name="HappyHorse Model Loader (MagiHuman DiT)",
            category=f"{CATEGORY}/loaders",
            description=("Loads a HappyHorse / daVinci-MagiHuman DiT (15B) from models/diffusion_models "
                         "(or its happyhorse/ subfolder): a single .safetensors file, or any shard of a sharded "
                         "Hugging Face folder. Accepts bf16/fp32 files, fp8 repacks and Wan2GP split keys. "
                         "Weights stay in system RAM until the sampler runs."),
            inputs=[
                io.Combo.Input("model_name", options=_options(cb.list_happyhorse_models(), "no files found"),
                               tooltip="DiT in models/diffusion_models: a sharded folder ('happyhorse/distill/ "
                                       "(sharded)') or a single file. distill = 8-step model, base = 32 steps + "
                                       "CFG, 540p_sr / 1080p_sr = super-resolution models."),
                io.Combo.Input("variant", options=VARIANT_CHOICES, default="auto",
                               tooltip="Which checkpoint this is. The four have identical shapes, so 'auto' reads "
                                       "the file/folder name (distill, base, 540p, 1080p)."),
                io.Combo.Input("weight_dtype", options=DTYPE_CHOICES, default="bf16",
                               tooltip="Storage of the block weights (GPU bytes, bench/memory.py). bf16 = 30.6 GB; "
                                       "fp8 on the 32 shared layers = 21.9 GB; fp8 on all layers = 15.4 GB. fp8 is "
                                       "upcast per matmul, so it works on any GPU and on CPU. fp8_e4m3fn_fast = "
                                       "scaled fp8 whose matmuls run on fp8 tensor cores (RTX 40xx / L40 / H100 and "
                                       "newer; elsewhere the same as fp8_e4m3fn_scaled): faster, slightly less exact."),
                io.Combo.Input("fp8_scope", options=list(FP8_SCOPES), default="shared",
                               tooltip="shared = fp8 only for layers 4-35 (the 8 modality-specific layers stay "
                                       "bf16, best quality); all = every block linear in fp8."),
                io.Combo.Input("attention", options=ATTENTION_CHOICES, default="auto",
                               tooltip="auto = follows ComfyUI's --use-sage-attention / --use-flash-attention; "
                                       "otherwise flash-attn if installed on a CUDA GPU, else PyTorch SDPA. A "
                                       "backend that cannot run falls back to SDPA with one warning."),
                HHBlockSwap.Input("block_swap", optional=True,
                                  tooltip="Optional block-swap settings (HappyHorse Block Swap node)."),
            ],
            outputs=[HHModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name, variant, weight_dtype, fp8_scope, attention, block_swap=None) -> io.NodeOutput:
        path = checkpoint_target(cb.model_path("diffusion_models", model_name))

        def load():
            return load_dit(path, variant=None if variant == "auto" else variant, weight_dtype=weight_dtype,
                            fp8_scope=fp8_scope, device=cb.offload_device(),
                            attn_backend=cb.attention_choice(attention), interrupt=cb.interrupt_check)

        with oom_advice("HappyHorse Model Loader"):
            ram_plan.make_room(disk_bytes(path), unload=cb.unload_patcher)  # RAM plan: one idle DiT at a time
            model = load()
        report = getattr(model, "load_report", None)
        loaded = LoadedDiT(model=model, variant=report.variant if report else variant, path=path,
                           block_swap=block_swap)
        if not block_swap:  # one ModelPatcher per module: the native MODEL's, also used by the easy path
            loaded.patcher = build_patcher(model)
        return io.NodeOutput(ram_plan.track(loaded, load))


class BlockSwapSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseBlockSwap",
            display_name="HappyHorse Block Swap",
            category=f"{CATEGORY}/loaders",
            description=("Keeps only N of the 40 transformer blocks on the GPU and streams the others from "
                         "system RAM just before use (the next block is prefetched on a side stream). Outputs "
                         "are bit-identical to running without swap; speed drops as N falls."),
            inputs=[
                io.Int.Input("blocks_on_device", default=20, min=0, max=40,
                             tooltip="Blocks kept on the GPU (0-40; bench/memory.py, bf16). Each shared block 0.55 "
                                     "GB, each of the 8 sandwich blocks 1.64 GB; the smallest stay resident. 40 = "
                                     "no swapping (30.6 GB); 20 = 10.9 GB resident; 10 = 5.5 GB resident; plus "
                                     "up to 1.6 GB for the block in flight."),
                io.Boolean.Input("pin_memory", default=False,
                                 tooltip="Pinned host memory for faster copies; costs as much page-locked RAM as "
                                         "the swapped blocks (up to ~30 GB in bf16)."),
                io.Boolean.Input("auto", default=False,
                                 tooltip="Choose blocks_on_device at run time: as many blocks as the free VRAM "
                                         "holds after the clip's activations (size, seconds, CFG, SR); the "
                                         "console log says what was chosen and why. Overrides blocks_on_device."),
            ],
            outputs=[HHBlockSwap.Output(display_name="block_swap")],
        )

    @classmethod
    def execute(cls, blocks_on_device, pin_memory, auto=False) -> io.NodeOutput:
        return io.NodeOutput(BlockSwapConfig(blocks_on_device=int(blocks_on_device), pin_memory=bool(pin_memory),
                                             auto=bool(auto)))


class TextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseTextEncoderLoader",
            display_name="HappyHorse Text Encoder Loader (T5Gemma)",
            category=f"{CATEGORY}/loaders",
            description=("Loads the T5Gemma-9B encoder from models/text_encoders: the google/t5gemma-9b-9b-ul2 "
                         "folder ('t5gemma-9b-9b-ul2/ (sharded)'; only the ~18.5 GB encoder half is read) or an "
                         "encoder-only .safetensors (python -m happyhorse_core.tools.extract_t5gemma_encoder) with "
                         "the tokenizer files beside it or in a folder of text_encoders."),
            inputs=[
                io.Combo.Input("encoder_name", options=_options(cb.list_models("text_encoders"), "no files found"),
                               tooltip="The T5Gemma folder ('<folder>/ (sharded)') or an encoder-only file in "
                                       "models/text_encoders."),
                io.Combo.Input("weight_dtype", options=list(TEXT_WEIGHT_DTYPES), default="bf16",
                               tooltip="bf16 = ~18.5 GB of weights; fp32 doubles that (only for checks); fp8 "
                                       "stores the layer linears in fp8 (~10.2 GB, upcast per matmul, any GPU), "
                                       "scaled = with a per-tensor scale (closer to bf16). Cards under 24 GB: fp8; "
                                       "what does not fit stays in RAM and is streamed per layer."),
                io.Combo.Input("device", options=["default", "cpu"], default="default",
                               tooltip="default = the GPU while encoding (ComfyUI evicts it afterwards when "
                                       "memory is needed; layers that do not fit stay in RAM and are copied "
                                       "in per use); cpu = never on the GPU (for cards under ~24 GB; "
                                       "encoding a prompt then takes tens of seconds)."),
                io.Boolean.Input("release_after_encoding", default=False,
                                 tooltip="Free the encoder's RAM (and VRAM) as soon as the prompt is encoded; it is "
                                         "read from disk again when a prompt changes. For machines with 32-64 GB "
                                         "of RAM running two DiTs (super-resolution)."),
            ],
            outputs=[HHTextEncoder.Output(display_name="text_encoder")],
        )

    @classmethod
    def execute(cls, encoder_name, weight_dtype, device="default", release_after_encoding=False) -> io.NodeOutput:
        path = checkpoint_target(cb.model_path("text_encoders", encoder_name))
        with oom_advice("HappyHorse Text Encoder Loader"):
            ram_plan.make_room(disk_bytes(path) // 2, unload=cb.unload_patcher)  # the encoder half of the files
            encoder, tokenizer = load_text_stack(path, device="cpu", weight_dtype=weight_dtype,
                                                 interrupt=cb.interrupt_check)
        patcher = cb.wrap_model(encoder) if device == "default" else None  # None: stays on the CPU
        loaded = LoadedTextEncoder(encoder=encoder, tokenizer=tokenizer, path=path, patcher=patcher,
                                   release_after_encoding=bool(release_after_encoding))
        return io.NodeOutput(ram_plan.track(
            loaded, lambda: load_encoder(path, device="cpu", weight_dtype=weight_dtype, require_tokenizer=False)))


class TurboVAEDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseTurboVAEDLoader",
            display_name="HappyHorse Turbo-VAED Loader",
            category=f"{CATEGORY}/loaders",
            description=("Loads the Turbo-VAED fast video decoder from models/vae: the released "
                         "turbo_vae/checkpoint-340000.ckpt as it is (read with torch.load(weights_only=True), which "
                         "refuses code in a pickle) or a .safetensors made from it with python -m "
                         "happyhorse_core.tools.convert_ckpt (loads faster, memory-mapped)."),
            inputs=[
                io.Combo.Input("vae_name", options=_options(cb.list_models("vae"), "no files found"),
                               tooltip="turbo_vae/checkpoint-340000.ckpt or its .safetensors in models/vae (107 M "
                                       "parameters, ~0.2 GB bf16)."),
            ],
            outputs=[HHTurboVAED.Output(display_name="turbo_vaed")],
        )

    @classmethod
    def execute(cls, vae_name) -> io.NodeOutput:
        path = cb.model_path("vae", vae_name)
        with oom_advice("HappyHorse Turbo-VAED Loader"):
            decoder = load_turbo_vaed(path, device="cpu", dtype=cb.default_vae_dtype(),  # fp32 on a CPU, as ComfyUI's VAEs
                                      interrupt=cb.interrupt_check)
        return io.NodeOutput(LoadedTurboVAED(decoder=decoder, path=path, patcher=cb.wrap_model(decoder)))


class AudioVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAudioVAELoader",
            display_name="HappyHorse Audio VAE Loader (Stable Audio Open)",
            category=f"{CATEGORY}/loaders",
            description=("Loads the Stable Audio Open VAE as a native VAE, in place: from the full "
                         "stable-audio-open-1.0.safetensors in models/checkpoints (Comfy-Org's ungated repack; "
                         "only the pretransform.model.* tensors, ~0.6 GB, are read) or from a VAE-only file in "
                         "models/vae. ComfyUI's own VAE Loader takes only the latter."),
            inputs=[
                io.Combo.Input("vae_name", options=_options(_audio_vae_files(), "no files found"),
                               tooltip="stable-audio-open-1.0.safetensors (models/checkpoints) or an extracted "
                                       "Stable Audio VAE (models/vae)."),
            ],
            outputs=[io.Vae.Output(display_name="vae")],
        )

    @classmethod
    def execute(cls, vae_name) -> io.NodeOutput:
        try:
            path = cb.model_path("vae", vae_name)
        except FileNotFoundError:
            path = cb.model_path("checkpoints", vae_name)
        with oom_advice("HappyHorse Audio VAE Loader"):
            return io.NodeOutput(cb.native_vae(read_sao_vae(path)))


def _audio_vae_files() -> list[str]:
    """models/vae files, then models/checkpoints files not already named (the vae folder wins a name clash)."""
    vae = cb.list_models("vae")
    return vae + [n for n in cb.list_models("checkpoints") if n not in vae]


NODES = [ModelLoader, BlockSwapSettings, TextEncoderLoader, TurboVAEDLoader, AudioVAELoader]
