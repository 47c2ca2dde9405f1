"""The shipped workflows, one compact description per use case (built by scripts/build_workflows.py).

A workflow is a list of Nodes. Each node names its ComfyUI type, the widget values that differ from
the node's defaults (defaults come from the live /object_info), its input links as
{input name: (source node key, output name)} and the layout column it sits in; nodes of one column
are stacked in the order listed. Every workflow starts with a Note that lists the model files it
needs, the folder each goes in and where to get it (FILES).

The loaders use the file names a user would have (FILES[...].name); the tests swap them for the
tiny random-weight files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class ModelFile:
    name: str  # the loader widget value, relative to models/<folder>/
    folder: str  # models/<folder>/
    source: str  # where to get it (hub repo + path, conversion command)


FILES: dict[str, ModelFile] = {
    "distill": ModelFile(
        "happyhorse/magihuman_distill_bf16.safetensors", "diffusion_models",
        "GAIR/daVinci-MagiHuman, folder distill/ (a bf16 single-file repack; or copy the whole distill/ "
        "folder to diffusion_models/happyhorse/distill/ and pick any of its shards)"),
    "base": ModelFile(
        "happyhorse/magihuman_base_bf16.safetensors", "diffusion_models",
        "GAIR/daVinci-MagiHuman, folder base/ (a bf16 single-file repack; or copy the whole base/ "
        "folder to diffusion_models/happyhorse/base/ and pick any of its shards)"),
    "sr_1080p": ModelFile(
        "happyhorse/magihuman_1080p_sr_bf16.safetensors", "diffusion_models",
        "GAIR/daVinci-MagiHuman, folder 1080p_sr/ (a bf16 single-file repack; or copy the whole 1080p_sr/ "
        "folder to diffusion_models/happyhorse/1080p_sr/ and pick any of its shards)"),
    "text_encoder": ModelFile(
        "t5gemma-9b-9b-ul2/model-00001-of-00009.safetensors", "text_encoders",
        "google/t5gemma-9b-9b-ul2: download the whole repo into text_encoders/t5gemma-9b-9b-ul2/ "
        "(9 shards, model.safetensors.index.json, config.json, tokenizer files); only the encoder half "
        "is read"),
    "turbo_vaed": ModelFile(
        "happyhorse_turbo_vaed.safetensors", "vae",
        "GAIR/daVinci-MagiHuman turbo_vae/checkpoint-340000.ckpt, converted once with: python -m "
        "happyhorse_core.tools.convert_ckpt checkpoint-340000.ckpt happyhorse_turbo_vaed.safetensors"),
    "sao_vae": ModelFile(
        "stable_audio_open_vae.safetensors", "vae",
        "stabilityai/stable-audio-open-1.0 model.safetensors, VAE part extracted once with: python -m "
        "happyhorse_core.tools.extract_sao_vae model.safetensors stable_audio_open_vae.safetensors"),
    "wan22_vae": ModelFile(
        "wan2.2_vae.safetensors", "vae",
        "Comfy-Org/Wan_2.2_ComfyUI_Repackaged, split_files/vae/wan2.2_vae.safetensors"),
}

START_IMAGE = "example.png"  # ComfyUI ships input/example.png
VOICE_TRACK = "voice_reference.wav"

PROMPT = (
    "A medium close-up of a woman in her thirties with shoulder-length dark hair and a navy blazer, "
    "standing on a rooftop terrace in the warm light of late afternoon. She looks straight into the "
    "camera with a calm, friendly expression, smiles briefly and then speaks with clear, relaxed lip "
    "movements; her eyebrows lift slightly on the last words and she nods once. Her voice is warm, "
    "medium-pitched and unhurried, recorded close to the microphone. A light breeze moves a few strands "
    "of hair across her cheek. Behind her, out of focus, the city skyline and a few potted olive trees. "
    "The camera is static at eye level with a shallow depth of field; soft golden side light from the "
    "left, gentle shadows, natural skin tones, realistic texture, cinematic colour grading."
)
LINE = "Welcome back. Today I will show you how the whole clip is made in one pass."
BACKGROUND = "Soft wind and distant city traffic"


@dataclass
class Node:
    key: str  # unique within the workflow; links refer to it
    type: str
    col: int
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # input -> (source key, output name)
    title: Optional[str] = None
    width: Optional[int] = None


@dataclass
class Workflow:
    name: str  # file stem in workflows/
    title: str  # first line of the Note
    summary: str  # what it does, for the Note
    files: list[str]  # keys of FILES it needs
    nodes: list[Node]
    inputs: list[str] = field(default_factory=list)  # files the user puts in ComfyUI/input/
    groups: dict[int, str] = field(default_factory=dict)  # column -> group title


# ----------------------------------------------------------------------------- building blocks
def model_loader(key="model", file="distill", col=0, title=None, **widgets) -> Node:
    return Node(key, "HappyHorseModelLoader", col, {"model_name": FILES[file].name, **widgets}, title=title)


def text_nodes(col_loader=0, col_encode=1, **loader_widgets) -> list[Node]:
    return [Node("te", "HappyHorseTextEncoderLoader", col_loader,
                 {"encoder_name": FILES["text_encoder"].name, **loader_widgets}),
            Node("prompt", "HappyHorseTextEncode", col_encode,
                 {"prompt": PROMPT, "line": LINE, "background_sound": BACKGROUND},
                 {"text_encoder": ("te", "text_encoder")}, width=420)]


def empty_latent(col=1, seconds=2) -> Node:
    return Node("latent", "HappyHorseEmptyLatent", col, {"aspect": "16:9", "resolution": "256p", "seconds": seconds})


def sampler(col, model="model", video=("latent", "video_latent"), audio=("latent", "audio_latent"),
            **widgets) -> Node:
    return Node("sampler", "HappyHorseSampler", col, widgets,
                {"model": (model, "model"), "conditioning": ("prompt", "conditioning"),
                 "video_latent": video, "audio_latent": audio})


def decoders(col, video_src=("sampler", "video_latent"), audio_src=("sampler", "audio_latent"),
             col_loaders=0) -> list[Node]:
    return [Node("turbo", "HappyHorseTurboVAEDLoader", col_loaders, {"vae_name": FILES["turbo_vaed"].name}),
            Node("sao_vae", "VAELoader", col_loaders, {"vae_name": FILES["sao_vae"].name},
                 title="Load VAE (Stable Audio Open)"),
            Node("decode_video", "HappyHorseDecodeVideo", col,
                 links={"turbo_vaed": ("turbo", "turbo_vaed"), "video_latent": video_src}),
            Node("decode_audio", "HappyHorseDecodeAudio", col,
                 links={"audio_latent": audio_src, "vae": ("sao_vae", "VAE")})]


def save_nodes(col, prefix, images=("decode_video", "images")) -> list[Node]:
    return [Node("create_video", "CreateVideo", col, {"fps": 25.0},
                 {"images": images, "audio": ("decode_audio", "audio")}),
            Node("save", "SaveVideo", col + 1, {"filename_prefix": f"video/{prefix}", "format": "mp4",
                                                "codec": "h264"}, {"video": ("create_video", "VIDEO")},
                 width=420)]


STANDARD_GROUPS = {0: "1. Models", 1: "2. Prompt and clip size", 2: "3. Generate", 3: "4. Decode",
                   4: "5. Video", 5: "6. Save"}


# ----------------------------------------------------------------------------- the workflows
def t2v_distilled() -> Workflow:
    return Workflow(
        "hh_t2v_distilled_256p", "HappyHorse: text to video + audio (distilled, 256p, 2 s)",
        "The default: the distilled model samples video and speech together in 8 steps, Turbo-VAED decodes "
        "the frames, the Stable Audio VAE the sound; CreateVideo (25 fps) and SaveVideo write an mp4.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"],
        [model_loader(), *text_nodes(), empty_latent(), sampler(2), *decoders(3), *save_nodes(4, "hh_t2v")],
        groups=STANDARD_GROUPS)


def i2v() -> Workflow:
    nodes = [model_loader(), *text_nodes(),
             Node("wan_vae", "VAELoader", 0, {"vae_name": FILES["wan22_vae"].name}, title="Load VAE (Wan2.2)"),
             empty_latent(col=1),
             Node("image", "LoadImage", 2, {"image": START_IMAGE}, title="Start image"),
             Node("i2v", "HappyHorseImageToVideo", 2, links={"image": ("image", "IMAGE"), "vae": ("wan_vae", "VAE"),
                                                            "video_latent": ("latent", "video_latent")}),
             sampler(3), *decoders(4), *save_nodes(5, "hh_i2v")]
    next(n for n in nodes if n.key == "sampler").links["first_frame"] = ("i2v", "first_frame")
    return Workflow(
        "hh_i2v", "HappyHorse: image to video + audio (distilled, 256p, 2 s)",
        "The clip starts on your image: the native Wan2.2 VAE encodes it (centre-cropped and resized to the "
        "clip size) into the first latent frame, which the sampler keeps fixed.",
        ["distill", "text_encoder", "wan22_vae", "turbo_vaed", "sao_vae"], nodes,
        inputs=[f"{START_IMAGE} (any picture; pick yours in Load Image)"],
        groups={0: "1. Models", 1: "2. Prompt and clip size", 2: "3. Start image", 3: "4. Generate",
                4: "5. Decode", 5: "6. Video", 6: "7. Save"})


def base_cfg() -> Workflow:
    return Workflow(
        "hh_base_cfg", "HappyHorse: base model with CFG (32 steps, 256p, 2 s)",
        "The undistilled base checkpoint: 32 steps with classifier-free guidance (video 5.0, then 2.0 for "
        "the last steps; audio 5.0), two model passes per step. Slower than the distilled workflow; the "
        "negative prompt is used here.",
        ["base", "text_encoder", "turbo_vaed", "sao_vae"],
        [model_loader(file="base", variant="base"), *text_nodes(), empty_latent(),
         sampler(2, mode="base", steps=32), *decoders(3), *save_nodes(4, "hh_base")],
        groups=STANDARD_GROUPS)


def t2v_sr1080() -> Workflow:
    nodes = [model_loader(),
             model_loader("sr_model", file="sr_1080p", variant="sr_1080p",
                          title="HappyHorse Model Loader (1080p SR)"),
             *text_nodes(), empty_latent(), sampler(2),
             Node("sr", "HappyHorseSuperResolution", 3, {"resolution": "1080p"},
                  {"sr_model": ("sr_model", "model"), "conditioning": ("prompt", "conditioning"),
                   "video_latent": ("sampler", "video_latent"), "audio_latent": ("sampler", "audio_latent")}),
             *decoders(4, video_src=("sr", "video_latent"), audio_src=("sr", "audio_latent")),
             *save_nodes(5, "hh_sr1080")]
    return Workflow(
        "hh_t2v_sr1080", "HappyHorse: text to video + audio, lifted to 1080p (2 s)",
        "Generates at 256p with the distilled model, then the 1080p super-resolution model refines the "
        "upsampled latent in 5 steps (1920x1088 for 16:9). The audio passes through unchanged. Needs the "
        "memory for both DiTs in turn (fp8 + block swap help, see hh_low_vram).",
        ["distill", "sr_1080p", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups={0: "1. Models", 1: "2. Prompt and clip size", 2: "3. Generate at 256p",
                3: "4. Super-resolution 1080p", 4: "5. Decode", 5: "6. Video", 6: "7. Save"})


def low_vram() -> Workflow:
    swap = Node("swap", "HappyHorseBlockSwap", 0, {"blocks_on_device": 20, "auto": True})
    model = model_loader(weight_dtype="fp8_e4m3fn_scaled", fp8_scope="shared")
    model.links["block_swap"] = ("swap", "block_swap")
    return Workflow(
        "hh_low_vram", "HappyHorse: low VRAM (fp8 weights + block swap auto, 256p, 2 s)",
        "The distilled workflow for smaller GPUs: the 32 shared layers are stored in scaled fp8 (~20.6 GB "
        "instead of 30.6 GB) and block swap 'auto' keeps as many of the 40 blocks on the GPU as the free VRAM "
        "holds after this clip's activations; the rest stream from system RAM (the console log says how many "
        "and why). Turn auto off and set blocks_on_device by hand if you still run out of memory (slower, "
        "same result). The T5Gemma encoder is stored in scaled fp8 (~10.2 GB instead of 18.5 GB); what does "
        "not fit on the GPU stays in RAM and is copied in per layer, and it is released from RAM as soon as "
        "the prompt is encoded. Peak (computed estimate, not measured): VRAM = what the card has free, "
        "at least ~8 GB at 256p; system RAM ~21 GB for the DiT plus ~10 GB for the text encoder while it "
        "encodes (32 GB machines: close other programs). Loading is "
        "faster from a file converted once: python -m happyhorse_core.tools.convert_fp8 <distill folder> "
        "magihuman_distill_fp8.safetensors --dtype fp8_e4m3fn_scaled --scope shared",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"],
        [swap, model, *text_nodes(weight_dtype="fp8_e4m3fn_scaled", release_after_encoding=True), empty_latent(),
         sampler(2), *decoders(3),
         *save_nodes(4, "hh_low_vram")],
        groups=STANDARD_GROUPS)


def lipsync_audio() -> Workflow:
    nodes = [model_loader(), *text_nodes(),
             empty_latent(col=1),
             Node("voice", "LoadAudio", 2, {"audio": VOICE_TRACK}, title="Voice track"),
             Node("voice_ref", "HappyHorseAudioReference", 2,
                  links={"audio": ("voice", "AUDIO"), "vae": ("sao_vae", "VAE"),
                         "audio_latent": ("latent", "audio_latent")}),
             sampler(3), *decoders(4), *save_nodes(5, "hh_lipsync")]
    next(n for n in nodes if n.key == "sampler").links["voice_latent"] = ("voice_ref", "voice_latent")
    return Workflow(
        "hh_lipsync_audio", "HappyHorse: lip-sync to your voice track (distilled, 256p, 2 s)",
        "Load Audio reads your recording; HappyHorse Voice Reference encodes it with the Stable Audio VAE "
        "(resampled to the model's timing, cut or padded to the clip) and the sampler makes the lips follow "
        "it. Write what is said in 'line' for the best sync.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        inputs=[f"{VOICE_TRACK} (your recording: wav/mp3/flac, any rate; pick it in Load Audio)"],
        groups={0: "1. Models", 1: "2. Prompt and clip size", 2: "3. Voice track", 3: "4. Generate",
                4: "5. Decode", 5: "6. Video", 6: "7. Save"})


def upscale_chain() -> Workflow:
    nodes = [model_loader(), *text_nodes(), empty_latent(), sampler(2), *decoders(3),
             Node("upscale", "ImageScaleBy", 4, {"upscale_method": "lanczos", "scale_by": 2.0},
                  {"image": ("decode_video", "images")}),
             *save_nodes(5, "hh_upscaled", images=("upscale", "IMAGE"))]
    return Workflow(
        "hh_upscale_chain", "HappyHorse: frames into a native upscaler (2x lanczos, 2 s)",
        "HappyHorse frames are a plain IMAGE batch, so any image node can follow: here ComfyUI's Upscale "
        "Image By doubles the size (896x512) before CreateVideo. Swap in an upscale model (Load Upscale "
        "Model + Upscale Image (using Model)) for better detail.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups={**STANDARD_GROUPS, 4: "5. Upscale (native)", 5: "6. Video", 6: "7. Save"})


WORKFLOWS = [t2v_distilled, i2v, base_cfg, t2v_sr1080, low_vram, lipsync_audio, upscale_chain]
WORKFLOWS.append(__import__("workflow_specs_native").native_core)  # native MODEL path (own module)


def all_workflows() -> list[Workflow]:
    from workflow_specs_api import API_WORKFLOWS  # hosted HappyHorse 1.0 (scripts/workflow_specs_api.py)
    return [make() for make in WORKFLOWS + API_WORKFLOWS]


def note_text(wf: Workflow) -> str:
    """The Note's text: what the workflow does and every file it needs, with folder and source."""
    lines = [wf.title, "", wf.summary, "", "Model files (ComfyUI/models/<folder>/<name>):"]
    for key in wf.files:
        f = FILES[key]
        lines += [f"- {f.folder}/{f.name}", f"    from {f.source}"]
    if wf.inputs:
        lines += ["", "Input files (ComfyUI/input/):"] + [f"- {item}" for item in wf.inputs]
    lines += ["", "Press R (refresh) after adding files. Weights are never downloaded by the nodes."]
    return "\n".join(lines)
