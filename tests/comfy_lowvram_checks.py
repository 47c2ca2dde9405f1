"""Partial loading through ComfyUI's real ModelPatcher, run INSIDE ComfyUI's python (no server):
    COMFYUI_HOME/venv/bin/python tests/comfy_lowvram_checks.py COMFYUI_HOME
Prints one JSON object {check name: "ok" | traceback}; tests/test_lowvram_comfy.py asserts on it.

The `meta` device stands in for the GPU: ModelPatcher.load(meta, budget = half the model) leaves the
modules that do not fit on the CPU. Ops on meta accept CPU operands silently, so "the forward ran"
proves nothing: a TorchDispatchMode records every op whose operands mix a CPU tensor (other than a
0-dim scalar) with the compute device. Weight copies (copy_ / _to_copy) are the fetch itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
from in_comfy import check, report, start_comfy  # noqa: E402

HOME = Path(sys.argv[1])
start_comfy(HOME)
import torch  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from pack_import import pack_module  # noqa: E402

# the core through the pack, so that the models and the adapter share one copy of its classes
iter_hosts = pack_module("happyhorse_core.fetch").iter_hosts
_tiny_dit = pack_module("happyhorse_core.testing.tiny_dit")
tiny_dit, tiny_dit_inputs = _tiny_dit.tiny_dit, _tiny_dit.tiny_dit_inputs
_tiny_text = pack_module("happyhorse_core.testing.tiny_text")
random_encoder, tiny_encoder_config = _tiny_text.random_encoder, _tiny_text.tiny_encoder_config


def _load_pack_module(name: str):
    """A module of the pack's nodes/ package (ComfyUI's own `nodes` module owns that name here)."""
    return pack_module(f"nodes.{name}")


comfy_ops = _load_pack_module("comfy_ops")
META, CPU = torch.device("meta"), torch.device("cpu")
COPIES = {"copy_", "_to_copy", "to", "empty_like", "lift_fresh", "detach", "clone", "_copy_from"}


class OperandDevices(TorchDispatchMode):
    """Records ops that mix a non-scalar CPU tensor with a tensor on the compute device."""

    def __init__(self, compute: torch.device) -> None:
        super().__init__()
        self.compute, self.mixed, self.ops = compute, [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if name not in COPIES and any(t.device == self.compute for t in tensors):
            self.ops += 1
            cpu = [tuple(t.shape) for t in tensors if t.device.type == "cpu" and t.dim() > 0]
            if cpu:
                self.mixed.append((name, cpu))
        return func(*args, **kwargs)


def patcher_for(model, load_device):
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=CPU,
                                            size=mm.module_size(model))


def bytes_on(model, device_type: str) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
               if t.device.type == device_type)


def half_budget_meta_run(adapter: bool):
    model = tiny_dit()
    if adapter:
        comfy_ops.enable_partial_load(model)
    patcher = patcher_for(model, META)
    patcher.load(META, lowvram_model_memory=mm.module_size(model) // 2, full_load=False)
    mode = OperandDevices(META)
    try:
        with torch.no_grad(), mode:
            model(*tiny_dit_inputs(model, device=META))
    except RuntimeError as e:  # some meta kernels do check devices; the recorder saw the op first
        if adapter or "device" not in str(e):
            raise
    return model, mode


@check
def detector_sees_cpu_weights_without_the_adapter():
    """What the issue found: a plain partial load strands part of the DiT on the CPU, unannounced."""
    model, mode = half_budget_meta_run(adapter=False)
    assert bytes_on(model, "cpu") > 0
    assert not comfy_ops.offloaded_modules(model)
    assert mode.mixed, "the recorder saw no CPU weight operand: it could not catch the bug it tests for"


@check
def half_budget_partial_load_computes_on_the_compute_device():
    model, mode = half_budget_meta_run(adapter=True)
    stranded = bytes_on(model, "cpu")
    assert stranded > 0, "nothing was offloaded: the budget did not force a partial load"
    offloaded = comfy_ops.offloaded_modules(model)
    assert offloaded, "ComfyUI flagged no module castable"
    on_cpu = {name for name, m in iter_hosts(model) if m.weight.device.type == "cpu"}
    assert on_cpu == set(offloaded), f"CPU modules not flagged castable: {sorted(on_cpu - set(offloaded))}"
    assert mode.ops > 50 and not mode.mixed, f"ops with CPU operands on the compute device: {mode.mixed[:5]}"


def forced_cast_outputs(model_fn, run, patches=None, full=False):
    model = model_fn()
    comfy_ops.enable_partial_load(model)
    patcher = patcher_for(model, CPU)
    if patches:
        patcher.add_patches(patches(model), 1.0)
    if full:
        patcher.load(CPU, full_load=True)
    else:
        patcher.load(CPU, lowvram_model_memory=1, full_load=False)  # nothing fits: every host is cast per call
        hosts = [m for _, m in iter_hosts(model)]
        assert all(m.comfy_cast_weights for m in hosts), "some weight-holding layer was not offloaded"
    with torch.no_grad():
        out = run(model)
    patcher.detach()
    return out if isinstance(out, tuple) else (out,)


def same(a, b):
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)), "outputs differ"


def plain(model_fn, run):
    with torch.no_grad():
        out = run(model_fn())
    return out if isinstance(out, tuple) else (out,)


def run_dit(model):
    return model(*tiny_dit_inputs(model, device=CPU))


def bf16_dit():
    return tiny_dit()


def fp8_dit():
    SandwichDiT = pack_module("happyhorse_core.dit").SandwichDiT
    Ops = pack_module("happyhorse_core.dit.ops").Ops
    tiny_config = pack_module("happyhorse_core.testing.tiny_dit").tiny_config
    model = SandwichDiT(tiny_config("distill"), Ops(weight_dtype="fp8_e4m3fn", fp8_scope="all"))
    model.load_state_dict(tiny_dit().state_dict())
    return model.eval()


def text_encoder():
    return random_encoder(tiny_encoder_config(vocab_size=97, hidden_size=48), seed=3).to(torch.bfloat16)


def run_text(enc):
    ids = torch.randint(0, 97, (1, 11), generator=torch.Generator().manual_seed(0))
    return enc.encode(ids)


@check
def forced_cast_is_bit_identical_bf16_dit():
    same(plain(bf16_dit, run_dit), forced_cast_outputs(bf16_dit, run_dit))


@check
def forced_cast_is_bit_identical_fp8_dit():
    same(plain(fp8_dit, run_dit), forced_cast_outputs(fp8_dit, run_dit))


@check
def forced_cast_is_bit_identical_text_encoder():
    same(plain(text_encoder, run_text), forced_cast_outputs(text_encoder, run_text))


def lora_like(model):
    """A 'diff' patch on the WHOLE stacked weight of a 3-expert layer and an fp8 shared layer."""
    g = torch.Generator().manual_seed(7)
    keys = ["block.layers.0.attention.linear_qkv.weight", "block.layers.2.mlp.down_proj.weight",
            "adapter.video_embedder.weight"]
    sd = model.state_dict()
    return {k: (torch.randn(sd[k].shape, generator=g) * 0.05,) for k in keys}


@check
def weight_patch_partial_equals_full_load_bf16():
    same(forced_cast_outputs(bf16_dit, run_dit, lora_like, full=True),
         forced_cast_outputs(bf16_dit, run_dit, lora_like))


@check
def weight_patch_partial_equals_full_load_fp8():
    same(forced_cast_outputs(fp8_dit, run_dit, lora_like, full=True),
         forced_cast_outputs(fp8_dit, run_dit, lora_like))


@check
def weight_patch_changes_the_output():
    assert not torch.equal(plain(bf16_dit, run_dit)[0], forced_cast_outputs(bf16_dit, run_dit, lora_like)[0])


if __name__ == "__main__":
    report(only=sys.argv[2:])
