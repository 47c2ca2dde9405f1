"""Which DiT a checkpoint holds: architecture from tensor shapes, variant from the user or the name.

Shapes give the architecture (`infer_config`), so tiny test files and the 15B files go through
one path: hidden size from `adapter.video_embedder.weight`, head_dim from the q_norm length,
kv heads (and the attention gate) from the linear_qkv rows, three-expert layers from norm
length 3*hidden, GELU7 layers from down_proj in-features == 4*hidden.

base, distill, sr_540p and sr_1080p have identical shapes, so the variant comes from, in order:
the explicit argument, the `happyhorse_variant` metadata our converter writes, or the file /
folder name (`distill`, `540`, `1080`, `base`; a bare `sr` is ambiguous). It sets the coords
style (v1 for both SR models) and, for sr_1080p, the windowed-attention layers. A base or
distill file loaded as sr_1080p is accepted (same shapes); it just runs the SR settings.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..dit.config import VARIANTS, DiTConfig
from ..errors import CheckpointError

REQUIRED_FOR_SHAPES = ("adapter.video_embedder.weight", "adapter.audio_embedder.weight",
                       "adapter.text_embedder.weight")
_LAYER_RE = re.compile(r"^block\.layers\.(\d+)\.")
# (pattern on a lower-case file/folder name, variant); a bare "sr" is ambiguous between the SR models
_NAME_CLUES = ((re.compile(r"1080"), "sr_1080p"), (re.compile(r"540"), "sr_540p"),
               (re.compile(r"distill"), "distill"), (re.compile(r"(?<![a-z])base(?![a-z])"), "base"),
               (re.compile(r"(?<![a-z])sr(?![a-z])"), "sr"))
METADATA_KEY = "happyhorse_variant"


def sr1080_local_layers(num_layers: int) -> tuple[int, ...]:
    """Windowed layers of the 1080p SR model, as a rule that also scales to tiny models.

    Global layers are every 4th layer (3, 7, ...) below num_layers - 8; with 40 layers that is
    3, 7, ..., 31 (MODEL_SPEC §4.6). Models of <= 11 layers, where that leaves none, keep every
    4th layer overall global. All other layers are local.
    """
    glob = [i for i in range(3, num_layers - 8, 4)] or list(range(3, num_layers, 4))
    return tuple(i for i in range(num_layers) if i not in glob)


def apply_variant(cfg: DiTConfig, variant: str) -> DiTConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown DiT variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return cfg.replace(coords_style="v1" if variant.startswith("sr") else "v2",
                       local_attn_layers=sr1080_local_layers(cfg.num_layers) if variant == "sr_1080p" else ())


def variant_from_name(path: str | Path) -> str | None:
    """Variant suggested by the file/folder name or its two parent folders (nearest first), else None."""
    path = Path(path)
    names = [path.stem if path.suffix else path.name, *(p.name for p in list(path.parents)[:2])]
    for name in names:
        found = {v for rx, v in _NAME_CLUES if rx.search(name.lower())}
        if "sr" in found and found & {"sr_540p", "sr_1080p"}:
            found.discard("sr")
        if len(found) > 1 or found == {"sr"}:
            raise ValueError(f"the name {name!r} does not say which DiT variant this is (it suggests "
                             f"{' and '.join(sorted(found)) if found != {'sr'} else 'sr_540p or sr_1080p'}); "
                             f"choose the variant explicitly ({', '.join(VARIANTS)}).")
        if found:
            return found.pop()
    return None


def resolve_variant(variant: str | None, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    if variant:
        if variant not in VARIANTS:
            raise ValueError(f"unknown DiT variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        return variant
    meta = (metadata or {}).get(METADATA_KEY)
    if meta in VARIANTS:
        return meta
    guess = variant_from_name(path)
    if guess is None:
        raise ValueError(f"cannot tell which DiT variant {Path(path).name} is (base, distill, sr_540p and sr_1080p "
                         f"have identical weights shapes, and the name gives no clue); choose it explicitly: "
                         f"{', '.join(VARIANTS)}.")
    return guess


def infer_config(shapes: dict[str, tuple[int, ...]], where: str = "checkpoint") -> DiTConfig:
    """DiTConfig (variant settings left at base defaults) from canonical key -> shape."""
    lacking = [k for k in REQUIRED_FOR_SHAPES if k not in shapes]
    layers = sorted({int(m.group(1)) for k in shapes if (m := _LAYER_RE.match(k))})
    if lacking or not layers:
        raise CheckpointError(f"{where}: cannot read the architecture, missing {', '.join(lacking) or 'block.layers.*'}")
    if layers != list(range(len(layers))):
        gaps = sorted(set(range(layers[-1] + 1)) - set(layers))
        raise CheckpointError(f"{where}: transformer layers {gaps[:10]} are missing (found {len(layers)} layers "
                              f"up to {layers[-1]}); the checkpoint is incomplete.")
    d, video_in = shapes["adapter.video_embedder.weight"]
    experts = [_layer_experts(shapes, i, d, where) for i in layers]
    p = "block.layers.0.attention."
    head_dim = shapes[p + "q_norm.weight"][0] // experts[0]
    rows = shapes[p + "linear_qkv.weight"][0] // experts[0]
    heads_q = d // max(head_dim, 1)
    kv2, gated = _kv_rows(rows, d, heads_q, head_dim)
    if kv2 is None:
        raise CheckpointError(f"{where}: linear_qkv has {rows} rows per expert, which fits no (query, key, value, "
                              f"gate) split for hidden {d} and head_dim {head_dim}.")
    gelu = tuple(i for i in layers if shapes.get(f"block.layers.{i}.mlp.down_proj.weight", (0, 0))[1] == 4 * d)
    try:
        return DiTConfig(num_layers=len(layers), hidden_size=d, head_dim=head_dim, num_heads_kv=kv2 // (2 * head_dim),
                         video_in_channels=video_in, audio_in_channels=shapes["adapter.audio_embedder.weight"][1],
                         text_in_channels=shapes["adapter.text_embedder.weight"][1],
                         mm_layers=tuple(i for i, e in zip(layers, experts) if e == 3), gelu7_layers=gelu,
                         enable_attn_gating=gated)
    except ValueError as e:
        raise CheckpointError(f"{where}: tensor shapes give an impossible architecture ({e}).") from None


def _layer_experts(shapes: dict, i: int, d: int, where: str) -> int:
    key = f"block.layers.{i}.attention.pre_norm.weight"
    n = shapes.get(key, (0,))[0]
    if n not in (d, 3 * d):
        raise CheckpointError(f"{where}: {key} has length {n}, expected {d} (shared layer) or {3 * d} "
                              "(three-expert layer)" if n else f"{where}: {key} is missing")
    return n // d


def _kv_rows(rows: int, d: int, heads_q: int, head_dim: int) -> tuple[int | None, bool]:
    """Rows taken by k and v together, and whether a per-head gate follows (q | k | v | gate)."""
    for gated in (True, False):
        kv2 = rows - d - (heads_q if gated else 0)
        if kv2 > 0 and kv2 % (2 * head_dim) == 0 and heads_q % (kv2 // (2 * head_dim)) == 0:
            return kv2, gated
    return None, False
