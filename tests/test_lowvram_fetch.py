"""The weight-fetch step (happyhorse_core/fetch.py) on CPU, without ComfyUI.

A copying fetcher stands in for a partial load that offloaded EVERY layer: each call gets fresh
copies of the stored bytes. Outputs must equal the plain path bit for bit (the copy holds the same
bytes in the same dtype, and no later op changes), for bf16 and fp8 storage, for the DiT, the
T5Gemma encoder and Turbo-VAED. A patching fetcher shows weight patches go through the same step.
"""
from __future__ import annotations

import pytest
import torch

from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.ops import ExpertLinear, Ops
from happyhorse_core.fetch import Fetched, WeightHost, iter_hosts
from happyhorse_core.testing.tiny_dit import tiny_config, tiny_dit, tiny_dit_inputs
from happyhorse_core.testing.tiny_text import random_encoder, tiny_encoder_config

pytestmark = pytest.mark.lowvram


class CopyFetcher:
    """Fresh copies per call (what a cast from the offload device returns); counts fetch/release."""

    def __init__(self, patch=None) -> None:
        self.fetched: dict[int, int] = {}
        self.released = 0
        self.patch = patch  # optional fn(module, whole weight) -> patched whole weight

    @staticmethod
    def _copy(t, device):
        if t is None:
            return None
        out = torch.empty_like(t, device=device)
        out.copy_(t)
        return out

    def fetch(self, m: WeightHost, device: torch.device) -> Fetched:
        self.fetched[id(m)] = self.fetched.get(id(m), 0) + 1
        w = self._copy(m.weight, device)
        if self.patch is not None:
            w = self.patch(m, w)
        return Fetched(w, self._copy(getattr(m, "bias", None), device),
                       self._copy(getattr(m, "weight_scale", None), device), "token")

    def release(self, m: WeightHost, fetched: Fetched) -> None:
        assert fetched.token == "token"
        self.released += 1


def install(model: torch.nn.Module, fetcher) -> list[WeightHost]:
    hosts = [m for _, m in iter_hosts(model)]
    for m in hosts:
        m.weight_fetcher = fetcher
    return hosts


def orphan_params(model: torch.nn.Module) -> list[str]:
    """Parameters whose owning module is not a WeightHost (they would stay on the CPU in a partial load)."""
    owners = {id(p) for _, m in iter_hosts(model) for p in m.parameters(recurse=False)}
    return [n for n, p in model.named_parameters() if id(p) not in owners]


def fp8_dit(weight_dtype: str) -> SandwichDiT:
    model = SandwichDiT(tiny_config("distill"), Ops(weight_dtype=weight_dtype, fp8_scope="all"))
    missing, unexpected = model.load_state_dict(tiny_dit().state_dict(), strict=False)  # rounds to fp8
    assert not unexpected and all(k.endswith("weight_scale") for k in missing)
    for m in model.modules():
        if isinstance(m, ExpertLinear) and m.weight_scale is not None:
            m.weight_scale.fill_(0.75)  # a non-trivial per-tensor scale
    return model.eval()


@pytest.mark.parametrize("kind", ["bf16", "fp32", "fp8_e4m3fn", "fp8_e4m3fn_scaled", "fp8_e5m2"])
def test_dit_every_layer_fetched_is_bit_identical(kind):
    model = {"bf16": lambda: tiny_dit(), "fp32": lambda: tiny_dit(compute_dtype=torch.float32)}.get(
        kind, lambda: fp8_dit(kind))()
    if kind.startswith("fp8"):
        assert any(p.dtype.is_floating_point and p.element_size() == 1 for p in model.parameters())
    assert orphan_params(model) == []
    args = tiny_dit_inputs(model)
    with torch.no_grad():
        ref = model(*args)
        fetcher = CopyFetcher()
        hosts = install(model, fetcher)
        out = model(*args)
    assert all(torch.equal(a, b) for a, b in zip(ref, out))
    assert set(fetcher.fetched) == {id(m) for m in hosts}, "some weight-holding layer bypassed the fetch step"
    assert fetcher.released == sum(fetcher.fetched.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_text_encoder_every_layer_fetched_is_bit_identical(dtype):
    enc = random_encoder(tiny_encoder_config(vocab_size=97, hidden_size=48), seed=3).to(dtype)
    assert orphan_params(enc) == []
    ids = torch.randint(0, 97, (1, 11), generator=torch.Generator().manual_seed(0))
    ref = enc.encode(ids)
    fetcher = CopyFetcher()
    hosts = install(enc, fetcher)
    out = enc.encode(ids)
    assert torch.equal(ref, out)
    assert set(fetcher.fetched) == {id(m) for m in hosts}
    assert fetcher.released == sum(fetcher.fetched.values())


def test_turbo_vaed_every_conv_fetched_is_bit_identical():
    vae = TurboVAED(TurboVAEDConfig.tiny())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    assert orphan_params(vae) == []
    latent = torch.randn(1, vae.config.latent_channels, 2, 2, 2, generator=g)
    ref = vae.decode(latent)
    fetcher = CopyFetcher()
    hosts = install(vae, fetcher)
    out = vae.decode(latent, device="cpu")
    assert torch.equal(ref, out)
    assert set(fetcher.fetched) == {id(m) for m in hosts}


def test_without_a_fetcher_layers_read_their_own_tensors():
    """The default path makes no copy: fetch hands back the parameter objects themselves."""
    model = fp8_dit("fp8_e4m3fn_scaled")
    for _, m in iter_hosts(model):
        f = m.fetch(torch.device("cpu"))
        assert f.weight is m.weight and f.token is None
        assert f.bias is getattr(m, "bias", None) and f.scale is getattr(m, "weight_scale", None)


def test_weight_patch_through_fetch_equals_merged_weight():
    """A patch applied by the fetcher to the WHOLE stacked expert weight == the same patch merged into
    the parameter (the layer slices experts after the fetch, as LoRA under partial load needs)."""
    torch.manual_seed(0)
    patched = tiny_dit(compute_dtype=torch.float32)
    merged = tiny_dit(compute_dtype=torch.float32)
    target = "block.layers.0.attention.linear_qkv"  # a 3-expert sandwich layer: [3*out, in]
    delta = torch.randn_like(merged.get_submodule(target).weight, dtype=torch.float32) * 0.01
    assert merged.get_submodule(target).experts == 3
    with torch.no_grad():
        w = merged.get_submodule(target).weight
        w.copy_((w.float() + delta).to(w.dtype))

    def patch(m, whole):
        if m is patched.get_submodule(target):
            assert whole.shape == m.weight.shape  # the whole stacked tensor, not one expert
            return (whole.float() + delta).to(whole.dtype)
        return whole

    install(patched, CopyFetcher(patch))
    args = tiny_dit_inputs(merged)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(merged(*args), patched(*args)))


@pytest.fixture(scope="module")
def tiny_encoder_file(tmp_path_factory):
    from safetensors.torch import save_file
    cfg = tiny_encoder_config(vocab_size=97, hidden_size=48)
    enc = random_encoder(cfg, seed=3)
    path = tmp_path_factory.mktemp("t5") / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    return path, cfg, enc


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_scaled"])
def test_text_encoder_fp8_storage_loads_runs_and_fetches_identically(tiny_encoder_file, weight_dtype):
    from happyhorse_core.text.loading import load_encoder
    path, cfg, fp32_ref = tiny_encoder_file
    enc = load_encoder(path, config=cfg, weight_dtype=weight_dtype)
    linears = [m for n, m in enc.named_modules() if n.endswith("_proj")]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert all((getattr(m, "weight_scale", None) is not None) == weight_dtype.endswith("scaled") for m in linears)
    assert enc.embed_tokens.weight.dtype == torch.bfloat16 and enc.norm.weight.dtype == torch.bfloat16
    assert orphan_params(enc) == []
    ids = torch.randint(0, 97, (1, 11), generator=torch.Generator().manual_seed(0))
    ref = enc.encode(ids)
    # fp8 weights, bf16 activations: close to the fp32 encoder at bf16/fp8 precision (relative L2)
    want = fp32_ref.encode(ids)
    rel = ((ref.float() - want).norm() / want.norm()).item()
    assert ref.dtype == torch.bfloat16 and rel < 0.1, rel
    install(enc, CopyFetcher())
    assert torch.equal(enc.encode(ids), ref)


def test_text_encoder_rejects_unknown_weight_dtype(tiny_encoder_file):
    from happyhorse_core.text.loading import load_encoder
    path, cfg, _ = tiny_encoder_file
    with pytest.raises(ValueError, match="weight_dtype must be one of"):
        load_encoder(path, config=cfg, weight_dtype="int4")
