"""The shipped workflows, one compact description per use case (built by scripts/build_workflows.py).

A workflow is a list of Nodes. Each node names its ComfyUI type, the widget values that differ from
the node's defaults (defaults come from the live /object_info), its input links as
{input name: (source node key, output name)} and the layout column it sits in; nodes of one column
are stacked in the order listed. Every workflow starts with a Markdown Note that lists, for each model
file, the exact download link, the folder it goes in and the name to pick in the loader (FILES).

Adding a workflow: write a function returning a Workflow and decorate it with @workflow, here or in a
new module scripts/workflow_specs_<feature>.py (every such module is imported by all_workflows(), so
features do not have to edit one shared list). The file name is Workflow.name + ".json"; ComfyUI's
template browser shows that name as the title and workflows/<name>.jpg as the picture.

The loaders use the names a user has after downloading (FILES[...].name); the tests lay the tiny
random weights out under those same names (tests/integration/workflow_runs.install_release_layouts).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HF = "https://huggingface.co"


@dataclass(frozen=True)
class ModelFile:
    name: str  # the loader widget value, relative to models/<folder>/
    folder: str  # models/<folder>/
    what: str  # what the file is, for the Note
    url: str  # exact download link (a file, or a folder page for sharded folders)
    get: str  # what to download and where it lands (one Markdown line; may hold a command)


def _dit(sub: str, what: str) -> ModelFile:
    return ModelFile(
        f"happyhorse/{sub}/ (sharded)", "diffusion_models", what, f"{HF}/GAIR/daVinci-MagiHuman/tree/main/{sub}",
        f"the whole `{sub}/` folder (every `model-*-of-*.safetensors` shard and `model.safetensors.index.json`) "
        f"into `ComfyUI/models/diffusion_models/happyhorse/{sub}/`: `huggingface-cli download "
        f"GAIR/daVinci-MagiHuman --include \"{sub}/*\" --local-dir ComfyUI/models/diffusion_models/happyhorse` "
        "(a symlink to the folder in the Hugging Face cache works too). Optional: `python -m "
        f"happyhorse_core.tools.convert_fp8 <folder> happyhorse/magihuman_{sub}_bf16.safetensors --dtype bf16` "
        "writes a merged single file")


FILES: dict[str, ModelFile] = {
    "distill": _dit("distill", "Distilled DiT (8 steps)"),
    "base": _dit("base", "Base DiT (32 steps + CFG)"),
    "sr_1080p": _dit("1080p_sr", "1080p super-resolution DiT"),
    "text_encoder": ModelFile(
        "t5gemma-9b-9b-ul2/ (sharded)", "text_encoders", "T5Gemma-9B text encoder",
        f"{HF}/google/t5gemma-9b-9b-ul2/tree/main",
        "the whole repository (9 shards, `model.safetensors.index.json`, `config.json`, tokenizer files; accept "
        "the licence on the page first) into `ComfyUI/models/text_encoders/t5gemma-9b-9b-ul2/`: `huggingface-cli "
        "download google/t5gemma-9b-9b-ul2 --local-dir ComfyUI/models/text_encoders/t5gemma-9b-9b-ul2`; only the "
        "encoder half (18.5 GB) is read"),
    "turbo_vaed": ModelFile(
        "turbo_vae/checkpoint-340000.ckpt", "vae", "Turbo-VAED video decoder",
        f"{HF}/GAIR/daVinci-MagiHuman/blob/main/turbo_vae/checkpoint-340000.ckpt",
        "`turbo_vae/checkpoint-340000.ckpt` into `ComfyUI/models/vae/turbo_vae/`: `huggingface-cli download "
        "GAIR/daVinci-MagiHuman turbo_vae/checkpoint-340000.ckpt --local-dir ComfyUI/models/vae` (read as it is, "
        "with torch.load(weights_only=True))"),
    "sao_vae": ModelFile(
        "stable-audio-open-1.0.safetensors", "checkpoints", "Stable Audio Open VAE (read from the full checkpoint)",
        f"{HF}/Comfy-Org/stable-audio-open-1.0_repackaged/blob/main/stable-audio-open-1.0.safetensors",
        "`stable-audio-open-1.0.safetensors` (ungated, 4.9 GB) into `ComfyUI/models/checkpoints/`; the loader reads "
        "only its VAE (`pretransform.model.*`). A VAE-only file in `models/vae/` works too"),
    "lora": ModelFile(
        "happyhorse/happyhorse_lora.safetensors", "loras",
        "a daVinci-MagiHuman / HappyHorse LoRA (PEFT lora_A/lora_B or kohya lora_up/lora_down keys named after "
        "the model's parameters)", f"{HF}/models?search=MagiHuman",
        "any daVinci-MagiHuman LoRA file into `ComfyUI/models/loras/happyhorse/` and pick it in the LoRA node. "
        "No LoRA? Select the LoRA node and bypass it (Ctrl+B)"),
    "wan22_vae": ModelFile(
        "wan2.2_vae.safetensors", "vae", "Wan2.2 VAE (encodes the start image)",
        f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/blob/main/split_files/vae/wan2.2_vae.safetensors",
        "`split_files/vae/wan2.2_vae.safetensors` into `ComfyUI/models/vae/wan2.2_vae.safetensors`"),
}

ASSETS = Path(__file__).resolve().parents[1] / "workflows" / "assets"  # example inputs shipped with the pack
START_IMAGE = "happyhorse_start_image.png"  # workflows/assets/, copy to ComfyUI/input/
VOICE_TRACK = "happyhorse_voice.wav"  # workflows/assets/ (espeak-ng), copy to ComfyUI/input/
VOICE_LINE = "Hello there. This photo can talk now, and it speaks with my own voice."  # what VOICE_TRACK says

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


def sr_loader(col=0) -> Node:
    return model_loader("sr_model", file="sr_1080p", col=col, variant="sr_1080p",
                        title="HappyHorse Model Loader (1080p SR)")


def text_nodes(col_loader=0, col_encode=1, line=LINE, **loader_widgets) -> list[Node]:
    return [Node("te", "HappyHorseTextEncoderLoader", col_loader,
                 {"encoder_name": FILES["text_encoder"].name, **loader_widgets}),
            Node("prompt", "HappyHorseTextEncode", col_encode,
                 {"prompt": PROMPT, "line": line, "background_sound": BACKGROUND},
                 {"text_encoder": ("te", "text_encoder")}, width=420)]


def empty_latent(col=1, seconds=2, key="latent", title=None, **widgets) -> Node:
    return Node(key, "HappyHorseEmptyLatent", col,
                {"aspect": "16:9", "resolution": "256p", "seconds": seconds, **widgets}, title=title)


def audio_vae_loader(col=0) -> Node:
    return Node("sao_vae", "HappyHorseAudioVAELoader", col, {"vae_name": FILES["sao_vae"].name})


def wan_vae_loader(col=0) -> Node:
    return Node("wan_vae", "VAELoader", col, {"vae_name": FILES["wan22_vae"].name}, title="Load VAE (Wan2.2)")


def sampler(col, model="model", video=("latent", "video_latent"), audio=("latent", "audio_latent"),
            **widgets) -> Node:
    return Node("sampler", "HappyHorseSampler", col, widgets,
                {"model": (model, "model"), "conditioning": ("prompt", "conditioning"),
                 "video_latent": video, "audio_latent": audio})


def super_resolution(col, source="sampler", **widgets) -> Node:
    return Node("sr", "HappyHorseSuperResolution", col, {"resolution": "1080p", **widgets},
                {"sr_model": ("sr_model", "model"), "conditioning": ("prompt", "conditioning"),
                 "video_latent": (source, "video_latent"), "audio_latent": (source, "audio_latent")})


def start_image(col, key="i2v", latent="latent") -> list[Node]:
    """Load Image + HappyHorse Image To Video at the size of `latent` (needs wan_vae_loader())."""
    nodes = [] if key != "i2v" else [Node("image", "LoadImage", col, {"image": START_IMAGE}, title="Start image")]
    return nodes + [Node(key, "HappyHorseImageToVideo", col,
                         links={"image": ("image", "IMAGE"), "vae": ("wan_vae", "VAE"),
                                "video_latent": (latent, "video_latent")})]


def voice(col) -> list[Node]:
    """Load Audio + HappyHorse Voice Reference (needs audio_vae_loader() and the 'latent' node)."""
    return [Node("voice", "LoadAudio", col, {"audio": VOICE_TRACK}, title="Voice recording"),
            Node("voice_ref", "HappyHorseAudioReference", col,
                 links={"audio": ("voice", "AUDIO"), "vae": ("sao_vae", "vae"),
                        "audio_latent": ("latent", "audio_latent")})]


def decoders(col, video_src=("sampler", "video_latent"), audio_src=("sampler", "audio_latent"),
             col_loaders=0, audio=True) -> list[Node]:
    """Turbo-VAED (+ the audio VAE and HappyHorse Decode Audio unless audio=False)."""
    nodes = [Node("turbo", "HappyHorseTurboVAEDLoader", col_loaders, {"vae_name": FILES["turbo_vaed"].name})]
    if audio:
        nodes.append(audio_vae_loader(col_loaders))
    nodes.append(Node("decode_video", "HappyHorseDecodeVideo", col,
                      links={"turbo_vaed": ("turbo", "turbo_vaed"), "video_latent": video_src}))
    if audio:
        nodes.append(Node("decode_audio", "HappyHorseDecodeAudio", col,
                          links={"audio_latent": audio_src, "vae": ("sao_vae", "vae")}))
    return nodes


def save_nodes(col, prefix, images=("decode_video", "images"), audio=("decode_audio", "audio")) -> list[Node]:
    return [Node("create_video", "CreateVideo", col, {"fps": 25.0}, {"images": images, "audio": audio}),
            Node("save", "SaveVideo", col + 1, {"filename_prefix": f"video/{prefix}", "format": "mp4",
                                                "codec": "h264"}, {"video": ("create_video", "VIDEO")},
                 width=420)]


def link(nodes: list[Node], key: str, **links: tuple[str, str]) -> list[Node]:
    """Add input links to the node `key` of `nodes` (returns `nodes`)."""
    next(n for n in nodes if n.key == key).links.update(links)
    return nodes


def columns(*titles: str) -> dict[int, str]:
    """Group titles for columns 0, 1, ... numbered in reading order."""
    return {i: f"{i + 1}. {t}" for i, t in enumerate(titles)}


STANDARD_GROUPS = columns("Models", "Prompt and clip size", "Generate", "Decode", "Video", "Save")


# ----------------------------------------------------------------------------- registry
WORKFLOWS: list[Callable[[], Workflow]] = []


def workflow(make: Callable[[], Workflow]) -> Callable[[], Workflow]:
    """Register a workflow description (decorator); modules scripts/workflow_specs_*.py use it too."""
    WORKFLOWS.append(make)
    return make


def _feature_modules() -> None:
    for path in sorted(Path(__file__).resolve().parent.glob("workflow_specs_*.py")):
        importlib.import_module(path.stem)


def all_workflows() -> list[Workflow]:
    _feature_modules()
    built = [make() for make in WORKFLOWS]
    names = [wf.name for wf in built]
    if len(set(names)) != len(names):
        raise ValueError(f"two workflow descriptions share a name: {sorted(names)}")
    return built


# ----------------------------------------------------------------------------- the workflows
DEFAULT_WORKFLOW = "HappyHorse Text to Video 256p"


@workflow
def t2v_distilled() -> Workflow:
    return Workflow(
        DEFAULT_WORKFLOW, "HappyHorse: text to video + audio (distilled, 256p, 2 s)",
        "The default: the distilled model samples video and speech together in 8 steps, Turbo-VAED decodes "
        "the frames, the Stable Audio VAE the sound; CreateVideo (25 fps) and SaveVideo write an mp4.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"],
        [model_loader(), *text_nodes(), empty_latent(), sampler(2), *decoders(3), *save_nodes(4, "hh_t2v")],
        groups=STANDARD_GROUPS)


@workflow
def i2v() -> Workflow:
    nodes = [model_loader(), *text_nodes(), wan_vae_loader(), empty_latent(col=1), *start_image(2),
             sampler(3), *decoders(4), *save_nodes(5, "hh_i2v")]
    return Workflow(
        "HappyHorse Image to Video 256p", "HappyHorse: image to video + audio (distilled, 256p, 2 s)",
        "The clip starts on your image: the native Wan2.2 VAE encodes it (centre-cropped and resized to the "
        "clip size) into the first latent frame, which the sampler keeps fixed.",
        ["distill", "text_encoder", "wan22_vae", "turbo_vaed", "sao_vae"],
        link(nodes, "sampler", first_frame=("i2v", "first_frame")), inputs=[START_IMAGE],
        groups=columns("Models", "Prompt and clip size", "Start image", "Generate", "Decode", "Video", "Save"))


@workflow
def base_cfg() -> Workflow:
    return Workflow(
        "HappyHorse Base Model with CFG 256p", "HappyHorse: base model with CFG (32 steps, 256p, 2 s)",
        "The undistilled base checkpoint: 32 steps with classifier-free guidance (video 5.0, then 2.0 for "
        "the last steps; audio 5.0), two model passes per step. Slower than the distilled workflow; the "
        "negative prompt is used here.",
        ["base", "text_encoder", "turbo_vaed", "sao_vae"],
        [model_loader(file="base", variant="base"), *text_nodes(), empty_latent(),
         sampler(2, mode="base", steps=32), *decoders(3), *save_nodes(4, "hh_base")],
        groups=STANDARD_GROUPS)


@workflow
def t2v_sr1080() -> Workflow:
    nodes = [model_loader(), sr_loader(), *text_nodes(), empty_latent(), sampler(2), super_resolution(3),
             *decoders(4, video_src=("sr", "video_latent"), audio_src=("sr", "audio_latent")),
             *save_nodes(5, "hh_t2v_1080p")]
    return Workflow(
        "HappyHorse Text to Video 1080p with SR", "HappyHorse: text to video + audio, lifted to 1080p (2 s)",
        "Generates at 256p with the distilled model, then the 1080p super-resolution model refines the "
        "upsampled latent in 5 steps (1920x1088 for 16:9). The audio passes through unchanged. Needs the "
        "memory for both DiTs in turn (fp8 + block swap help, see the Low VRAM workflow).",
        ["distill", "sr_1080p", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups=columns("Models", "Prompt and clip size", "Generate at 256p", "Super-resolution 1080p", "Decode",
                       "Video", "Save"))


@workflow
def low_vram() -> Workflow:
    swap = Node("swap", "HappyHorseBlockSwap", 0, {"blocks_on_device": 20, "auto": True})
    model = model_loader(weight_dtype="fp8_e4m3fn_scaled", fp8_scope="shared")
    model.links["block_swap"] = ("swap", "block_swap")
    return Workflow(
        "HappyHorse Low VRAM fp8 and Block Swap 256p",
        "HappyHorse: low VRAM (fp8 weights + block swap auto, 256p, 2 s)",
        "The distilled workflow for smaller GPUs: the 32 shared layers are stored in scaled fp8 (21.9 GB "
        "instead of 30.6 GB) and block swap 'auto' keeps as many of the 40 blocks on the GPU as the free VRAM "
        "holds after this clip's activations; the rest stream from system RAM (the console log says how many "
        "and why). Turn auto off and set blocks_on_device by hand if you still run out of memory (slower, "
        "same result). The T5Gemma encoder is stored in scaled fp8 (~10.2 GB instead of 18.5 GB); what does "
        "not fit on the GPU stays in RAM and is copied in per layer, and it is released from RAM as soon as "
        "the prompt is encoded. Peak (computed estimate, not measured): VRAM = what the card has free, "
        "at least ~8 GB at 256p; system RAM ~21 GB for the DiT plus ~10 GB for the text encoder while it "
        "encodes (32 GB machines: close other programs). Loading is "
        "faster from a file converted once: `python -m happyhorse_core.tools.convert_fp8 <distill folder> "
        "magihuman_distill_fp8.safetensors --dtype fp8_e4m3fn_scaled --scope shared`",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"],
        [swap, model, *text_nodes(weight_dtype="fp8_e4m3fn_scaled", release_after_encoding=True), empty_latent(),
         sampler(2), *decoders(3),
         *save_nodes(4, "hh_low_vram")],
        groups=STANDARD_GROUPS)


@workflow
def lipsync_audio() -> Workflow:
    nodes = [model_loader(), *text_nodes(line=VOICE_LINE), empty_latent(col=1, seconds=5), *voice(2),
             sampler(3), *decoders(4, audio=False), audio_vae_loader(),
             *save_nodes(5, "hh_lipsync", audio=("voice_ref", "voice_for_video"))]  # the recording cut to the clip
    link(nodes, "sampler", voice_latent=("voice_ref", "voice_latent"))
    link(nodes, "latent", voice=("voice", "AUDIO"))  # the clip lasts as long as the recording (at most seconds)
    return Workflow(
        "HappyHorse Lip Sync to Your Voice 256p", "HappyHorse: lip-sync to your voice recording (distilled, 256p, 5 s)",
        "Load Audio reads your recording; HappyHorse Voice Reference encodes it with the Stable Audio VAE "
        "(resampled to the model's timing, cut or padded to the clip) and the sampler makes the lips follow "
        "it. The mp4 keeps your recording as it is, cut to the clip. Write what is said in 'line' for the "
        "best sync.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"], nodes, inputs=[VOICE_TRACK],
        groups=columns("Models", "Prompt and clip size", "Voice recording", "Generate", "Decode", "Video", "Save"))


@workflow
def upscale_chain() -> Workflow:
    nodes = [model_loader(), *text_nodes(), empty_latent(), sampler(2), *decoders(3),
             Node("upscale", "ImageScaleBy", 4, {"upscale_method": "lanczos", "scale_by": 2.0},
                  {"image": ("decode_video", "images")}),
             *save_nodes(5, "hh_upscaled", images=("upscale", "IMAGE"))]
    return Workflow(
        "HappyHorse Frames into a Native Upscaler", "HappyHorse: frames into a native upscaler (2x lanczos, 2 s)",
        "HappyHorse frames are a plain IMAGE batch, so any image node can follow: here ComfyUI's Upscale "
        "Image By doubles the size (896x512) before CreateVideo. Swap in an upscale model (Load Upscale "
        "Model + Upscale Image (using Model)) for better detail.",
        ["distill", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups={**STANDARD_GROUPS, 4: "5. Upscale (native)", 5: "6. Video", 6: "7. Save"})


# ----------------------------------------------------------------------------- the Note
INPUT_NOTES = {
    START_IMAGE: "the start image (any picture; pick yours in Load Image)",
    VOICE_TRACK: f"the voice recording (any wav/mp3/flac; pick yours in Load Audio). It says: \"{VOICE_LINE}\"",
}


def note_text(wf: Workflow) -> str:
    """The Markdown Note: what the workflow does and, per model file, link, folder and loader name."""
    lines = [f"# {wf.title}", "", wf.summary, "", "## Model files", ""]
    for key in wf.files:
        f = FILES[key]
        lines += [f"- **{f.what}**: pick `{f.name}` (in `ComfyUI/models/{f.folder}/`)",
                  f"  - download: [{f.url.removeprefix(HF + '/')}]({f.url})", f"  - get: {f.get}"]
    if wf.inputs:
        lines += ["", "## Example inputs", "",
                  "Copy them from `custom_nodes/ComfyUI-HappyHorse/workflows/assets/` to `ComfyUI/input/`:", ""]
        lines += [f"- `{name}`: {INPUT_NOTES[name]}" for name in wf.inputs]
    lines += ["", "Press R (refresh) after adding files. Nothing is ever downloaded by the nodes."]
    return "\n".join(lines)
