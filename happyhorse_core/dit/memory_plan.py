"""Block swap `auto`: how many transformer blocks to keep on the GPU for one run (pure arithmetic).

    n, why = auto_blocks_on_device(block_bytes, other_bytes, free_bytes, activation_bytes(cfg, run))

The budget is the free VRAM at run time minus the activations of one DiT forward for the clip
(`activation_bytes`), minus the weights outside the blocks (adapter, heads; moved once) and a
reserve for the CUDA allocator. N is the largest count whose swap plan (the N resident blocks plus
the largest swapped block in flight, see offload.plan_from_sizes) fits that budget.

Activation model (bytes, one forward; CFG runs its two forwards one after the other):
  fixed + tokens * per_token,  per_token = ACT_BYTES_PER_TOKEN_PER_D * hidden_size
fitted to the two H200 measurements in bench/results/gpu_check_h200_run4.json (bf16, SDPA):
3 966 tokens -> 35.36 GB peak, 65 662 tokens -> 51.32 GB peak, with 28.57 GB of weights:
259 KB/token (51 B per hidden unit: the fp32 residual, bf16 projections and the fp32 SwiGLU
temporaries of a whole segment on CUDA) plus 5.8 GB fixed. Both are rounded up (52 B, 6 GiB).
CFG adds the second velocity (video tokens x 192 x fp32) held across the two forwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..geometry import ClipGeometry
from .config import PATCH, DiTConfig
from .offload import plan_from_sizes

GiB = 1 << 30
ACT_BYTES_PER_TOKEN_PER_D = 52
ACT_FIXED_BYTES = 6 * GiB
ALLOCATOR_RESERVE_BYTES = GiB // 2  # CUDA caching-allocator slack and cuBLAS workspaces
MAX_TEXT_TOKENS = 640


@dataclass(frozen=True)
class RunShape:
    """Token counts of one DiT forward: video tokens (after the 2x2 patch), audio frames, text rows."""

    video_tokens: int
    audio_frames: int
    text_tokens: int
    cfg: bool = False  # two forwards per step (base model, or SR with cfg on)

    @property
    def tokens(self) -> int:
        return self.video_tokens + self.audio_frames + self.text_tokens

    @classmethod
    def for_clip(cls, geometry: ClipGeometry, cfg: bool = False, text_tokens: int = MAX_TEXT_TOKENS) -> "RunShape":
        """A run at `geometry` (for SR: the SR target geometry)."""
        return cls(geometry.video_tokens, geometry.audio_frames, text_tokens, cfg)

    @classmethod
    def from_latents(cls, latent_frames: int, latent_h: int, latent_w: int, audio_frames: int, text_tokens: int,
                     cfg: bool = False) -> "RunShape":
        """From latent sizes as the nodes see them: video [B, 48, T, h, w] -> T * (h/2) * (w/2) tokens."""
        return cls(latent_frames * (latent_h // PATCH) * (latent_w // PATCH), audio_frames, text_tokens, cfg)


def activation_bytes(cfg: DiTConfig, run: RunShape) -> int:
    """Estimated peak activation bytes of one forward of a DiT with `cfg` on `run` (module docstring)."""
    per_token = ACT_BYTES_PER_TOKEN_PER_D * cfg.hidden_size
    cfg_extra = run.video_tokens * cfg.video_in_channels * 4 if run.cfg else 0
    return ACT_FIXED_BYTES + run.tokens * per_token + cfg_extra


@dataclass(frozen=True)
class AutoSwap:
    blocks_on_device: int
    budget_bytes: int  # free - activations - non-block weights - reserve (may be negative)
    peak_block_bytes: int  # the chosen plan's block bytes on the device at worst
    reason: str  # one log line: what was chosen and why


def auto_blocks_on_device(block_bytes: Sequence[int], other_bytes: int, free_bytes: int, activations: int,
                          reserve_bytes: int = ALLOCATOR_RESERVE_BYTES) -> AutoSwap:
    """Largest N whose swap plan fits free_bytes - activations - other_bytes - reserve_bytes.

    block_bytes: bytes of every transformer block; other_bytes: weights outside the blocks (moved to
    the device once). N = 0 when even one block in flight does not fit (the run may then run out of
    memory: the reason says so, and the advice message lists what to change).
    """
    n_blocks = len(block_bytes)
    budget = free_bytes - activations - other_bytes - reserve_bytes
    best = None
    for n in range(n_blocks, -1, -1):
        plan = plan_from_sizes(block_bytes, n)
        if plan.peak_bytes <= budget:
            best = plan
            break
    gb = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
    head = (f"free {gb(free_bytes)} - activations {gb(activations)} - other weights {gb(other_bytes)} - reserve "
            f"{gb(reserve_bytes)} = {gb(budget)} for blocks")
    if best is None:
        plan = plan_from_sizes(block_bytes, 0)
        return AutoSwap(0, budget, plan.peak_bytes,
                        f"block swap auto: 0/{n_blocks} blocks resident ({head}; even one block in flight needs "
                        f"{gb(plan.peak_bytes)}: expect an out-of-memory error, use fp8 weights or a smaller clip)")
    n = len(best.resident)
    what = "all blocks fit, nothing is swapped" if n == n_blocks else f"{n_blocks - n} streamed from RAM"
    return AutoSwap(n, budget, best.peak_bytes,
                    f"block swap auto: {n}/{n_blocks} blocks resident, {what} ({head}; plan peak "
                    f"{gb(best.peak_bytes)})")
