"""The RAM plan (nodes/ram_plan.py) on tiny weights: which models hold RAM at each step of the 1080p workflow.

Counted structurally (tracked models and the bytes of their tensors not on the meta device), not timed.
Available RAM is emulated as a machine that holds one DiT plus the margin, so RAM is "short" for two.
"""
from __future__ import annotations

import pytest
import torch

from happyhorse_core.dit.offload import module_bytes
from happyhorse_core.testing.tiny_dit import tiny_dit
from happyhorse_core.testing.tiny_text import random_encoder, tiny_encoder_config
from pack_import import pack_module

ram_plan = pack_module("nodes.ram_plan")


class LoadedDiT:  # the fields of nodes.types.LoadedDiT that the RAM plan uses (nodes/types.py needs ComfyUI)
    def __init__(self, model, variant, path):
        self.model, self.variant, self.path, self.patcher = model, variant, path, None


class LoadedTextEncoder:
    def __init__(self, encoder, tokenizer, path, release_after_encoding=False):
        self.encoder, self.tokenizer, self.path, self.patcher = encoder, tokenizer, path, None
        self.release_after_encoding = release_after_encoding

pytestmark = pytest.mark.lowvram


def held_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers())
               if t.device.type != "meta")


@pytest.fixture
def machine(monkeypatch):
    """RAM = margin + 1.5 tiny DiTs, minus what the tracked models hold now."""
    state = {"total": 0}

    def available():
        used = sum(held_bytes(ram_plan._module(m)) for m in list(ram_plan._TRACKED.values()))
        return state["total"] - used

    monkeypatch.setattr(ram_plan, "available_ram", available)
    monkeypatch.setattr(ram_plan, "_TRACKED", type(ram_plan._TRACKED)())
    return state


def load_dit(variant: str) -> LoadedDiT:
    load = lambda: tiny_dit(variant)  # noqa: E731
    ram_plan.make_room(module_bytes(tiny_dit(variant)))  # what the loader node does first
    return ram_plan.track(LoadedDiT(model=load(), variant=variant, path=f"tiny_{variant}"), load)


def test_1080p_workflow_holds_one_dit_at_sr_time(machine):
    dit_bytes = module_bytes(tiny_dit("sr_1080p"))
    machine["total"] = ram_plan.MARGIN_BYTES + int(1.5 * max(dit_bytes, module_bytes(tiny_dit())))
    unloaded = []
    cfg = tiny_encoder_config(vocab_size=97, hidden_size=48)
    enc_load = lambda: random_encoder(cfg, seed=3)  # noqa: E731
    text = ram_plan.track(LoadedTextEncoder(encoder=enc_load(), tokenizer=None, path="tiny_t5",
                                            release_after_encoding=True), enc_load)
    # prompt node: encode, then release (release_after_encoding)
    ram_plan.before_use(text)
    text.encoder.encode(torch.tensor([[1, 2, 3]]))
    ram_plan.release(text, unloaded.append)
    assert text.released and held_bytes(text.encoder) == 0
    # ComfyUI may run both model loaders before the sampler: the second load releases the idle first
    first, sr = load_dit("distill"), load_dit("sr_1080p")
    assert first.released and ram_plan.resident() == [sr]
    # sampler: placed(first) brings it back and releases the SR DiT
    ram_plan.before_use(first)
    assert not first.released and sr.released and held_bytes(first.model) == first.nbytes
    # SR node: placed(sr) -> at SR time only the SR DiT holds RAM
    ram_plan.before_use(sr)
    assert ram_plan.resident() == [sr] and first.released and held_bytes(first.model) == 0
    assert held_bytes(sr.model) == sr.nbytes and text.released


def test_nothing_is_released_when_ram_suffices(machine):
    machine["total"] = 10**15
    first, sr = load_dit("distill"), load_dit("sr_1080p")
    ram_plan.before_use(sr)
    assert set(map(id, ram_plan.resident())) == {id(first), id(sr)}


def test_released_dit_runs_again_identically(machine):
    machine["total"] = 10**15
    first = load_dit("distill")
    ref = {k: v.clone() for k, v in first.model.state_dict().items()}
    ram_plan.release(first)
    assert held_bytes(first.model) == 0
    ram_plan.before_use(first)
    assert all(torch.equal(ref[k], v) for k, v in first.model.state_dict().items())
