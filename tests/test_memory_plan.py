"""Block swap `auto` (happyhorse_core/dit/memory_plan.py): N from free VRAM minus the clip's activations."""
from __future__ import annotations

import pytest

from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.config import DiTConfig
from happyhorse_core.dit.memory_plan import (ACT_BYTES_PER_TOKEN_PER_D, ACT_FIXED_BYTES, RunShape, activation_bytes,
                                             auto_blocks_on_device)
from happyhorse_core.dit.offload import module_bytes
from happyhorse_core.dit.ops import Ops
from happyhorse_core.geometry import ClipGeometry

pytestmark = pytest.mark.lowvram
GB = 10**9
# the real model's shape in round units: 8 sandwich blocks of 3 units, 32 shared blocks of 1 unit
BLOCKS = [3 * GB] * 4 + [GB] * 32 + [3 * GB] * 4


@pytest.mark.parametrize("free_gb, act_gb, expected", [
    (80, 6, 40),   # 73.5 GB budget >= all 56 GB of blocks
    (60, 6, 38),   # 53.5 < 56: then 38 resident (32 shared + 6 sandwich) = 50 + 3 in flight = 53
    (40, 6, 30),   # 33.5: 30 shared + one sandwich block in flight = 33
    (20, 6, 10),   # 13.5: 10 + 3 = 13
    (20, 12, 4),   # a larger clip leaves 7.5: 4 + 3
    (8, 6, 0),     # 1.5 GB: not even one block in flight (3 GB)
])
def test_auto_picks_the_largest_plan_that_fits(free_gb, act_gb, expected):
    got = auto_blocks_on_device(BLOCKS, other_bytes=0, free_bytes=free_gb * GB, activations=act_gb * GB,
                                reserve_bytes=GB // 2)
    assert got.blocks_on_device == expected, got.reason
    assert got.peak_block_bytes <= max(got.budget_bytes, 3 * GB)
    assert f"{expected}/40 blocks resident" in got.reason and "activations" in got.reason


def test_auto_warns_when_nothing_fits():
    got = auto_blocks_on_device(BLOCKS, 0, 4 * GB, 6 * GB)
    assert got.blocks_on_device == 0 and "out-of-memory" in got.reason


def test_other_weights_come_out_of_the_budget():
    a = auto_blocks_on_device(BLOCKS, 0, 20 * GB, 6 * GB, reserve_bytes=0)
    b = auto_blocks_on_device(BLOCKS, 2 * GB, 20 * GB, 6 * GB, reserve_bytes=0)
    assert (a.blocks_on_device, b.blocks_on_device) == (11, 9)


def test_run_shape_tokens_match_the_clip_geometry():
    g = ClipGeometry.from_preset("16:9", "256p", 5)  # 448x256: 32 latent frames of 14x8 tokens
    run = RunShape.for_clip(g, text_tokens=256)
    assert (run.video_tokens, run.audio_frames, run.tokens) == (3584, 126, 3966)
    assert RunShape.from_latents(32, 16, 28, 126, 256).tokens == 3966


def test_activation_estimate_grows_with_resolution_seconds_and_cfg():
    cfg = DiTConfig()
    small = RunShape.for_clip(ClipGeometry.from_preset("16:9", "256p", 5))
    act = activation_bytes(cfg, small)
    assert act == ACT_FIXED_BYTES + small.tokens * ACT_BYTES_PER_TOKEN_PER_D * 5120
    assert activation_bytes(cfg, RunShape.for_clip(ClipGeometry.from_preset("16:9", "256p", 10))) > act
    assert activation_bytes(cfg, RunShape.for_clip(ClipGeometry.from_preset("16:9", "256p", 5), cfg=True)) > act
    big = RunShape.for_clip(ClipGeometry.from_preset("16:9", "1080p", 5))
    # within 10 % of the H200 measurement it was fitted to (51.32 GB peak - 28.57 GB weights, 65 662 tokens)
    assert abs(activation_bytes(cfg, RunShape(big.video_tokens, big.audio_frames, 256)) - 22.75 * GB) < 2.3 * GB


def test_real_model_on_a_24gb_card():
    """The full-size bf16 DiT (built on meta), 256p 5 s distilled, 23 GB free: some blocks stream."""
    model = SandwichDiT(DiTConfig(), Ops(device="meta"))
    sizes = [module_bytes(layer) for layer in model.block.layers]
    other = module_bytes(model) - sum(sizes)
    act = activation_bytes(model.config, RunShape.for_clip(ClipGeometry.from_preset("16:9", "256p", 5)))
    got = auto_blocks_on_device(sizes, other, 23 * GB, act)
    shared = min(sizes)
    budget = 23 * GB - act - other - (1 << 29)
    assert got.blocks_on_device == int((budget - max(sizes)) // shared)  # all resident blocks are shared ones
    assert 0 < got.blocks_on_device < 32
