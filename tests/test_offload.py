"""Block swap: bit-identical outputs, at most N + 1 blocks resident, the memory summary."""
from __future__ import annotations

import logging
import re

import pytest
import torch

from happyhorse_core.dit.config import PRESETS
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.offload import BlockSwap, module_bytes, plan_block_swap
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.sequence import pack
from weight_files import tiny_state

pytestmark = pytest.mark.weights
TINY = PRESETS["tiny"]  # 8 blocks: 0, 1, 6, 7 three-expert


def make_model() -> SandwichDiT:
    model = SandwichDiT(TINY, Ops(device="meta"))
    model.load_state_dict(tiny_state(TINY), assign=True)
    return model.eval()


@pytest.fixture(scope="module")
def seq():
    g = torch.Generator().manual_seed(1)
    return pack(torch.randn(1, 48, 2, 4, 6, generator=g), torch.randn(1, 5, 64, generator=g),
                torch.randn(7, 3584, generator=g))


def run(model, seq):
    with torch.no_grad():
        return model(seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)


@pytest.fixture(scope="module")
def reference(seq):
    return run(make_model(), seq)


@pytest.mark.parametrize("n", [0, 1, 4, 8])  # none, one, half, all
def test_outputs_identical_and_at_most_n_plus_one_resident(seq, reference, n):
    model = make_model()
    swap = BlockSwap(model, blocks_on_device=n, device="cpu")
    for _ in range(2):  # a second run reuses the same bookkeeping
        out = run(model, seq)
        assert all(torch.equal(a, b) for a, b in zip(out, reference))
    assert swap.max_resident <= n + 1
    assert swap.resident_now == n  # the slot is free between runs
    assert swap.swap_ins == 2 * (8 - n)  # every swapped block came in once per run
    assert swap.max_resident == (n + 1 if n < 8 else 8)
    swap.remove()
    assert all(torch.equal(a, b) for a, b in zip(run(model, seq), reference))


def test_without_prefetch_same_result(seq, reference):
    model = make_model()
    swap = BlockSwap(model, blocks_on_device=2, device="cpu", prefetch=False, pin_memory=True)
    assert all(torch.equal(a, b) for a, b in zip(run(model, seq), reference))
    assert swap.max_resident <= 3


def test_resident_blocks_are_the_small_shared_ones_spread_out():
    model = SandwichDiT(PRESETS["base"], Ops(device="meta"))  # full size, no memory used
    sizes = [module_bytes(layer) for layer in model.layers]
    assert sizes[4] * 2.5 < sizes[0]  # a sandwich block is ~3x a shared block
    plan = plan_block_swap(model.layers, 10)
    assert all(4 <= i <= 35 for i in plan.resident)
    gaps = [b - a for a, b in zip(plan.resident, plan.resident[1:])]
    assert min(gaps) >= 3  # spread over the 32 shared layers, not packed at one end
    block_total = sum(sizes)
    for n in (0, 10, 20, 40):
        p = plan_block_swap(model.layers, n)
        assert p.resident_bytes <= (n + 1) / 40 * block_total
        assert p.resident_bytes + p.swapped_bytes == block_total
    with pytest.raises(ValueError, match="between 0 and 40"):
        plan_block_swap(model.layers, 41)


def test_summary_line_and_log(seq, caplog):
    model = make_model()
    swap = BlockSwap(model, blocks_on_device=3, device="cpu")
    with caplog.at_level(logging.INFO, logger="HappyHorse"):
        run(model, seq)
    line = swap.summary()
    assert re.fullmatch(r"HappyHorse: 3/8 blocks on cpu \(\d+\.\d GB\), 5 offloaded \(\d+\.\d GB\)", line)
    assert line in caplog.text and swap.last_summary == line
