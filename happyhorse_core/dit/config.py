"""Architecture of the HappyHorse / daVinci-MagiHuman sandwich DiT as plain data.

The real model (MODEL_SPEC §1.1): 40 layers, hidden 5120, head_dim 128, 40 query heads,
8 kv heads (GQA), three per-modality "expert" weight sets in layers 0-3 and 36-39 (the
"sandwich"), a non-gated GELU7 MLP in layers 0-3 and the interleaved SwiGLU7 MLP elsewhere.
All four published checkpoints (base, distill, 540p SR, 1080p SR) share these shapes; the
1080p SR model additionally runs windowed "local" attention in every layer except
3, 7, ..., 31 (MODEL_SPEC §4.6), and both SR models use the "v1" coordinate style.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..geometry import AUDIO_LATENT_CHANNELS, PATCH_HW, VIDEO_LATENT_CHANNELS

# Modality ids, used everywhere (sequence packing, expert routing, output heads).
VIDEO, AUDIO, TEXT = 0, 1, 2
MODALITY_NAMES = ("video", "audio", "text")

PATCH = PATCH_HW  # spatial 2x2 patch of the video latent (temporal patch 1)


@dataclass(frozen=True)
class DiTConfig:
    num_layers: int = 40  # transformer layers
    hidden_size: int = 5120  # residual width D
    head_dim: int = 128  # per-head width; RoPE rotates the first 3/4 of it
    num_heads_kv: int = 8  # GQA kv heads; query heads = hidden_size // head_dim
    video_in_channels: int = VIDEO_LATENT_CHANNELS * PATCH_HW * PATCH_HW  # 48 latent channels x 2 x 2 patch = 192
    audio_in_channels: int = AUDIO_LATENT_CHANNELS  # Stable Audio Open VAE latent channels
    text_in_channels: int = 3584  # T5Gemma-9B encoder width
    mm_layers: tuple[int, ...] = (0, 1, 2, 3, 36, 37, 38, 39)  # 3-expert (video/audio/text) layers
    gelu7_layers: tuple[int, ...] = (0, 1, 2, 3)  # non-gated GELU7 MLP (4x width); others SwiGLU7
    local_attn_layers: tuple[int, ...] = ()  # windowed video attention (1080p SR only)
    frame_receptive_field: int = 11  # local window: video frames |i - j| <= 11
    coords_style: str = "v2"  # "v2" base/distill, "v1" super-resolution models
    enable_attn_gating: bool = True  # per-head sigmoid gate on the attention output
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.hidden_size % self.head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of head_dim {self.head_dim}")
        if self.num_heads_q % self.num_heads_kv:
            raise ValueError(f"{self.num_heads_q} query heads cannot be grouped over {self.num_heads_kv} kv heads")
        if self.head_dim % 8:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 8 (3-axis RoPE bands)")
        if self.coords_style not in ("v1", "v2"):
            raise ValueError(f"coords_style must be 'v1' or 'v2', got {self.coords_style!r}")
        for name in ("mm_layers", "gelu7_layers", "local_attn_layers"):
            bad = [i for i in getattr(self, name) if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"{name} has layer indices outside 0..{self.num_layers - 1}: {bad}")

    # -- derived sizes -------------------------------------------------------------------
    @property
    def num_heads_q(self) -> int:
        return self.hidden_size // self.head_dim

    @property
    def rope_bands(self) -> int:
        return self.head_dim // 8  # 16 frequencies per axis for head_dim 128

    @property
    def rotary_dims(self) -> int:
        return 6 * self.rope_bands  # 96 of 128 dims: sin/cos x (t, h, w)

    @property
    def qkv_out(self) -> int:
        """Rows of one expert of linear_qkv: q | k | v | gate."""
        gate = self.num_heads_q if self.enable_attn_gating else 0
        return (self.num_heads_q + 2 * self.num_heads_kv) * self.head_dim + gate

    @property
    def gelu7_intermediate(self) -> int:
        return 4 * self.hidden_size

    @property
    def swiglu7_intermediate(self) -> int:
        return int(self.hidden_size * 4 * 2 / 3) // 4 * 4  # 13652 for 5120

    @property
    def max_in_channels(self) -> int:
        return max(self.video_in_channels, self.audio_in_channels, self.text_in_channels)

    def num_experts(self, layer: int) -> int:
        return 3 if layer in self.mm_layers else 1

    def is_gelu7(self, layer: int) -> bool:
        return layer in self.gelu7_layers

    def mlp_intermediate(self, layer: int) -> int:
        return self.gelu7_intermediate if self.is_gelu7(layer) else self.swiglu7_intermediate

    def is_shared(self, layer: int) -> bool:
        """True for the single-weight middle layers (4..35 in the real model)."""
        return layer not in self.mm_layers

    def replace(self, **changes) -> "DiTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# 1080p SR: every layer is windowed except every 4th (3, 7, ..., 31), MODEL_SPEC §4.6.
SR1080_GLOBAL_LAYERS = tuple(range(3, 32, 4))
SR1080_LOCAL_LAYERS = tuple(i for i in range(40) if i not in SR1080_GLOBAL_LAYERS)

PRESETS: dict[str, DiTConfig] = {
    "distill": DiTConfig(),
    "base": DiTConfig(),
    "sr_540p": DiTConfig(coords_style="v1"),
    "sr_1080p": DiTConfig(coords_style="v1", local_attn_layers=SR1080_LOCAL_LAYERS),
    # Tiny presets for tests and the --tiny CLI: same structure, small numbers.
    "tiny": DiTConfig(num_layers=8, hidden_size=128, head_dim=32, num_heads_kv=2,
                      mm_layers=(0, 1, 6, 7), gelu7_layers=(0, 1)),
    "tiny_sr": DiTConfig(num_layers=10, hidden_size=96, head_dim=32, num_heads_kv=1,
                         mm_layers=(0, 1, 8, 9), gelu7_layers=(0, 1), coords_style="v1",
                         local_attn_layers=(0, 1, 2, 4, 5, 6, 8, 9)),
}

VARIANTS = ("base", "distill", "sr_540p", "sr_1080p")


def preset(name: str) -> DiTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(PRESETS)}") from None


def config_from_reference(arch: dict, coords_style: str = "v2", frame_receptive_field: int = 11) -> DiTConfig:
    """Build a DiTConfig from the reference's `arch_config` dict (golden-case JSON format)."""
    return DiTConfig(
        num_layers=arch["num_layers"],
        hidden_size=arch["hidden_size"],
        head_dim=arch["head_dim"],
        num_heads_kv=arch.get("num_heads_kv", arch.get("num_query_groups")),
        video_in_channels=arch.get("video_in_channels", 192),
        audio_in_channels=arch.get("audio_in_channels", AUDIO_LATENT_CHANNELS),
        text_in_channels=arch.get("text_in_channels", 3584),
        mm_layers=tuple(arch["mm_layers"]),
        gelu7_layers=tuple(arch["gelu7_layers"]),
        local_attn_layers=tuple(arch.get("local_attn_layers", ())),
        enable_attn_gating=arch.get("enable_attn_gating", True),
        coords_style=coords_style,
        frame_receptive_field=frame_receptive_field,
    )
