"""Key schemas of published MagiHuman DiT files, mapped onto our (the reference's) key names.

One table-driven pass over the file's keys (WEIGHT_LAYOUTS.md §1, §6), without reading data:
1. drop marker keys (ComfyUI `scaled_fp8`; activation scales `*.input_scale` / `*.scale_input`,
   unused since activations are quantized dynamically) and strip one wrapper prefix shared by
   all keys (`model.diffusion_model.`, `diffusion_model.`, `model.`, `module.`, `dit.`);
2. pair every weight with its scale: `<param>.__fp8_scale` (SanDiegoDude), `<layer>.scale_weight`
   (ComfyUI scaled_fp8), `<layer>.weight_scale` (ours, generic tools), or quanto int8
   `<layer>.weight._data` + `<layer>.weight._scale`;
3. map the Wan2GP split-expert schema (`linear_q/_k/_v/_g`, `_video/_audio/_text`) back to the
   fused, stacked official tensors as a list of parts to concatenate along dim 0: per expert
   [q, k, v, g], experts in the order video, audio, text.
The result is a `LayoutPlan`: canonical key -> `Recipe` (parts + their scales), plus the file
keys that map to nothing. Files of other models are recognised by a few signature keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import CheckpointError
from .safetensors_io import CheckpointIndex

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "module.", "dit.")
DIT_ROOTS = ("adapter.", "block.layers.", "final_norm_", "final_linear_")
MARKER_KEYS = ("scaled_fp8",)
IGNORED_SUFFIXES = (".input_scale", ".scale_input")  # activation scales (ComfyUI): unused, dynamic
# (key suffix, what replaces it to name the weight, naming shown to the user)
SCALE_NAMINGS = ((".__fp8_scale", "", "SanDiegoDude '<param>.__fp8_scale'"),
                 (".scale_weight", ".weight", "ComfyUI scaled_fp8 '<layer>.scale_weight'"),
                 (".weight_scale", ".weight", "'<layer>.weight_scale'"))
QUANTO_DATA, QUANTO_SCALE = ".weight._data", ".weight._scale"
MODALITIES = ("video", "audio", "text")
FP8_TAGS = ("F8_E4M3", "F8_E5M2")
FOREIGN_SIGNATURES = (  # substring of a key -> what the file is; first match wins, most specific first
    ("input_blocks.", "a Stable Diffusion UNet"),  # before attn1/encoder.layers: SD files hold those too
    ("self_attn.q.weight", "a Wan 2.x video DiT"), ("cross_attn.k.weight", "a Wan 2.x video DiT"),
    ("attn1.to_q.weight", "an LTX-Video (or other diffusers) transformer"),
    ("double_blocks.", "a Flux / HunyuanVideo DiT"),
    ("joint_blocks.", "a Stable Diffusion 3 MMDiT"), ("encoder.layers.", "a text encoder (T5 / T5Gemma)"),
    ("embed_tokens.weight", "a text encoder or language model"), ("lora_A.", "a LoRA"), ("lora_down.", "a LoRA"),
    ("decoder.up_blocks.", "a VAE"), ("decoder.conv_in.", "a VAE"), ("pretransform.", "Stable Audio Open"),
)
_SPLIT_SIGNATURE = re.compile(r"^block\.layers\.\d+\.(attention\.linear_[qkvg]|[a-z_.]+_(video|audio|text))\.weight$")
_SPLIT_RE = re.compile(r"^(block\.layers\.\d+)\.(attention\.linear_(?:q|k|v|g|proj)|mlp\.(?:up_gate_proj|down_proj))"
                       r"(?:_(video|audio|text))?\.weight$")


@dataclass(frozen=True)
class SourceTensor:
    name: str  # logical name after prefix strip, e.g. "block.layers.4.mlp.down_proj.weight"
    key: str  # key in the file
    dtype: str  # safetensors dtype tag
    shape: tuple[int, ...]
    scale_key: str | None = None  # per-tensor fp8 scale, or quanto per-row scale
    scale_naming: str = ""

    @property
    def is_fp8(self) -> bool:
        return self.dtype in FP8_TAGS


@dataclass(frozen=True)
class Recipe:
    parts: tuple[SourceTensor, ...]  # concatenated along dim 0, in order

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.parts[0].shape
        return (sum(p.shape[0] for p in self.parts), *first[1:]) if len(self.parts) > 1 else first


@dataclass
class LayoutPlan:
    recipes: dict[str, Recipe]  # canonical key -> how to build it
    unexpected: list[str]  # file keys that map to no canonical key
    missing_sources: list[str]  # source names a recipe needs but the file lacks
    prefix: str = ""
    schema: str = "official keys"
    ignored: list[str] = field(default_factory=list)
    fp8_dtypes: tuple[str, ...] = ()
    scale_namings: tuple[str, ...] = ()
    int8: bool = False
    incomplete: tuple[str, ...] = ()  # canonical keys not built because source parts are missing

    def describe(self, ckpt: CheckpointIndex) -> str:
        bits = [ckpt.layout]
        if self.prefix:
            bits.append(f"key prefix {self.prefix!r}")
        bits.append(self.schema)
        if self.fp8_dtypes:
            kinds = "/".join(t.replace("F8_", "fp8 ").lower() for t in self.fp8_dtypes)
            bits.append(kinds + (f" with {', '.join(self.scale_namings)} scales" if self.scale_namings else " unscaled"))
        if self.int8:
            bits.append("quanto int8")
        dtypes = sorted({p.dtype for r in self.recipes.values() for p in r.parts} - set(FP8_TAGS) - {"I8"})
        if dtypes:
            bits.append("other tensors " + "/".join(d.lower() for d in dtypes))
        return ", ".join(bits)


def strip_prefix(keys: list[str], prefixes: tuple[str, ...] = PREFIXES, roots: tuple[str, ...] = ()) -> str:
    """The first of `prefixes` that every key starts with and whose removal leaves at least one key
    starting with one of `roots` (any key if no roots); '' if none or if the keys already start
    with a root. Generic: the text-encoder loader passes its own prefixes and roots."""
    keys = list(keys)
    if not keys or (roots and all(k.startswith(roots) for k in keys)):
        return ""
    for p in prefixes:
        if all(k.startswith(p) for k in keys) and (not roots or any(k[len(p):].startswith(roots) for k in keys)):
            return p
    return ""


def detect_prefix(keys: list[str]) -> str:
    """The DiT wrapper prefix shared by every key (`model.diffusion_model.`, ...), else ''."""
    return strip_prefix(keys, PREFIXES, DIT_ROOTS)


def detect_foreign(keys: list[str]) -> str | None:
    for needle, what in FOREIGN_SIGNATURES:
        if any(needle in k for k in keys):
            return what
    return None


def plan_layout(ckpt: CheckpointIndex) -> LayoutPlan:
    """Map a checkpoint's keys onto canonical keys (see module docstring); no tensor data is read."""
    ignored = [k for k in ckpt.keys() if k in MARKER_KEYS or k.endswith(IGNORED_SUFFIXES)
               or any(k.endswith("." + m) for m in MARKER_KEYS)]
    keys = [k for k in ckpt.keys() if k not in set(ignored)]
    prefix = detect_prefix(keys)
    names = {k[len(prefix):]: k for k in keys}
    if not any(n.startswith(("block.layers.", "adapter.")) for n in names):
        what = detect_foreign(list(names))
        sample = ", ".join(list(names)[:3])
        raise CheckpointError(f"{ckpt.root} is not a HappyHorse/MagiHuman DiT (looks like {what or 'another model'}; "
                              f"first keys: {sample}). Select the HappyHorse DiT checkpoint "
                              "(keys adapter.*, block.layers.*, final_*).")
    sources, unexpected, missing = _pair_scales(ckpt, names)
    marked = any(k in MARKER_KEYS or any(k.endswith("." + m) for m in MARKER_KEYS) for k in ignored)
    _check_fp8_scales(ckpt, sources, marked_scaled=marked)
    split = any(_SPLIT_SIGNATURE.match(n) for n in sources)
    incomplete: list[str] = []
    if split:
        recipes, more_unexpected, more_missing = _merge_split_experts(sources, incomplete)
    else:
        recipes, more_unexpected, more_missing = {n: Recipe((s,)) for n, s in sources.items()}, [], []
    return LayoutPlan(recipes, unexpected + more_unexpected, missing + more_missing, prefix,
                      "Wan2GP split-expert keys" if split else "official keys", ignored,
                      tuple(sorted({s.dtype for s in sources.values() if s.is_fp8})),
                      tuple(sorted({s.scale_naming for s in sources.values() if s.scale_naming and s.dtype != "I8"})),
                      any(s.dtype == "I8" for s in sources.values()), tuple(incomplete))


def _pair_scales(ckpt: CheckpointIndex, names: dict[str, str]) -> tuple[dict[str, SourceTensor], list, list]:
    scales: dict[str, tuple[str, str]] = {}  # weight name -> (scale file key, naming)
    data: dict[str, str] = {}
    for name, key in names.items():
        if name.endswith(QUANTO_SCALE):
            scales[name[:-len(QUANTO_SCALE)] + ".weight"] = (key, "quanto '<layer>.weight._scale'")
            continue
        if name.endswith(QUANTO_DATA):
            data[name[:-len(QUANTO_DATA)] + ".weight"] = key
            continue
        for suffix, repl, naming in SCALE_NAMINGS:
            if name.endswith(suffix):
                scales[name[:-len(suffix)] + repl] = (key, naming)
                break
        else:
            data[name] = key
    sources: dict[str, SourceTensor] = {}
    missing: list[str] = []
    for name, key in data.items():
        info = ckpt.entries[key]
        scale_key, naming = scales.pop(name, (None, ""))
        if key.endswith(QUANTO_DATA) and scale_key is None:
            missing.append(key[:-len("._data")] + "._scale")
            continue
        sources[name] = SourceTensor(name, key, info.dtype, info.shape, scale_key, naming)
    unexpected = [key for key, _ in scales.values()]  # scales whose weight is not in the file
    return sources, unexpected, missing


def _check_fp8_scales(ckpt: CheckpointIndex, sources: dict[str, SourceTensor], marked_scaled: bool = False) -> None:
    fp8 = [s for s in sources.values() if s.is_fp8]
    scaled = [s for s in fp8 if s.scale_key]
    if marked_scaled and fp8 and not scaled:
        raise CheckpointError(
            f"{ckpt.root}: the file is marked 'scaled_fp8' (ComfyUI scaled fp8) but none of its {len(fp8)} fp8 "
            f"weights has a '<layer>.scale_weight' tensor (e.g. {fp8[0].key!r}); loading it without scales would "
            "give wrong weights. The file is incomplete: download or convert it again.")
    if scaled and len(scaled) < len(fp8):
        bad = next(s for s in fp8 if not s.scale_key)
        raise CheckpointError(
            f"{ckpt.root}: fp8 tensor {bad.key!r} has no scale, while {len(scaled)} of the {len(fp8)} fp8 weights "
            f"have one (e.g. {scaled[0].scale_key!r}); the file is incomplete or mixes two conversions. "
            "Convert the original bf16/fp32 checkpoint again.")


def _merge_split_experts(sources: dict[str, SourceTensor],
                         incomplete: list[str]) -> tuple[dict[str, Recipe], list[str], list[str]]:
    """Wan2GP split-expert names -> fused linear_qkv and stacked experts (module docstring, step 3)."""
    groups: dict[str, dict[str, SourceTensor]] = {}  # layer prefix -> logical name -> source
    recipes: dict[str, Recipe] = {}
    unexpected: list[str] = []
    for name, src in sources.items():
        m = _SPLIT_RE.match(name)
        if m:
            groups.setdefault(m.group(1), {})[name] = src
        else:
            recipes[name] = Recipe((src,))
    missing: list[str] = []
    for layer, parts in groups.items():
        mm = any(_SPLIT_RE.match(n).group(3) for n in parts)
        experts = [f"_{m}" for m in MODALITIES] if mm else [""]
        gated = any(".linear_g" in n for n in parts)
        targets = {"attention.linear_qkv": [f"attention.linear_{p}" for p in ("q", "k", "v", "g")[:4 if gated else 3]],
                   "attention.linear_proj": ["attention.linear_proj"], "mlp.up_gate_proj": ["mlp.up_gate_proj"],
                   "mlp.down_proj": ["mlp.down_proj"]}
        used: set[str] = set()
        for target, pieces in targets.items():
            needed = [f"{layer}.{piece}{e}.weight" for e in experts for piece in pieces]
            if not any(n in parts for n in needed):
                continue  # whole tensor absent: reported as a missing canonical key
            lacking = [n for n in needed if n not in parts]
            missing.extend(lacking)
            if lacking:
                incomplete.append(f"{layer}.{target}.weight")
            else:
                key = f"{layer}.{target}.weight"
                if key in recipes:  # a fused tensor next to its split parts
                    unexpected.append(recipes[key].parts[0].key)
                recipes[key] = Recipe(tuple(parts[n] for n in needed))
            used.update(needed)
        unexpected.extend(s.key for n, s in parts.items() if n not in used)
    return recipes, unexpected, missing
