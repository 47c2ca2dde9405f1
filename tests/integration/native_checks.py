"""The native MODEL path INSIDE ComfyUI's python (no server): run as
    COMFYUI_HOME/venv/bin/python tests/integration/native_checks.py COMFYUI_HOME [CHECK ...]
Prints one JSON object {check name: "ok" | traceback}; test_native_model.py asserts on it.

Parity checks run the same clip twice on a tiny random DiT with fp32 compute: once through
happyhorse_core's sampler (what the one-node HappyHorse Sampler runs), once through core
SamplerCustomAdvanced with the pack's native GUIDER / SIGMAS / SAMPLER / NOISE, and compare the
video and audio latents. Every operation on both paths is the same fp32 op on the same values,
so they must be equal bit for bit (torch.equal), not only close.
"""
from __future__ import annotations

import sys
from pathlib import Path

from in_comfy import check, report, start_comfy

start_comfy(Path(sys.argv[1]))
import torch  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.samplers  # noqa: E402
from comfy_extras import nodes_custom_sampler as ncs  # noqa: E402

from pack_import import pack_module  # noqa: E402

# the core through the pack, so that the models and the adapters share one copy of its classes
native_model = pack_module("nodes.native_model")
native_sampling = pack_module("nodes.native_sampling")
native_nodes = pack_module("nodes.native_nodes")
types_mod = pack_module("nodes.types")
GuidanceConfig = pack_module("happyhorse_core.sampling.guidance").GuidanceConfig
_latents = pack_module("happyhorse_core.sampling.latents")
audio_from_model, audio_to_model = _latents.audio_from_model, _latents.audio_to_model
video_from_model, video_to_model = _latents.video_from_model, _latents.video_to_model
_pipeline = pack_module("happyhorse_core.sampling.pipeline")
SamplingOptions, TextConditioning, generate = _pipeline.SamplingOptions, _pipeline.TextConditioning, _pipeline.generate
tiny_dit = pack_module("happyhorse_core.testing.tiny_dit").tiny_dit

T, H, W, F = 2, 4, 6, 5  # latent frames, latent h/w, audio frames: (F - 1) // 4 + 1 == T
SEED = 1234


def out(node_output):
    """The result tuple of a V3 node's execute()."""
    return node_output.result if hasattr(node_output, "result") else node_output


def make_text(dim: int) -> TextConditioning:
    g = torch.Generator().manual_seed(7)
    return TextConditioning(positive=torch.randn(6, dim, generator=g), negative=torch.randn(4, dim, generator=g))


def make_extras(dim: int) -> dict:
    g = torch.Generator().manual_seed(11)
    image = torch.randn(1, 48, 1, H, W, generator=g) * 0.5  # raw Wan2.2 latent of a start image
    voice = torch.randn(1, 64, F, generator=g)  # raw Stable Audio latent of a voice
    return {"image": image, "voice": voice}


def easy_path(dit, text, mode, seed, batch=1, image=None, voice=None, guidance=None):
    """What nodes/sampler_nodes.py runs: per row, seed + row; returns raw (video, audio) LATENT tensors."""
    vids, auds = [], []
    for b in range(batch):
        opts = SamplingOptions(mode=mode, seed=seed + b, guidance=guidance or GuidanceConfig())
        v, a = generate(dit, text, latent_frames=T, latent_h=H, latent_w=W, audio_frames=F, opts=opts,
                        image_latent=video_to_model(image) if image is not None else None,
                        audio_latent=audio_to_model(voice) if voice is not None else None)
        vids.append(video_from_model(v))
        auds.append(audio_from_model(a))
    return torch.cat(vids), torch.cat(auds)


def native_path(patcher, text, mode, seed, batch=1, image=None, voice=None, scales=(5.0, 2.0, 5.0), switch=500,
                noise=None, sampler=None, sigmas=None):
    """SamplerCustomAdvanced with the pack's native nodes; returns raw (video, audio) LATENT tensors."""
    pair = types_mod.PromptPair(positive=text.positive, negative=text.negative, prompt="p")
    pos, neg = out(native_nodes.ConditioningSplit.execute(pair))
    latent = out(native_nodes.PackAVLatent.execute(
        {"samples": torch.zeros(batch, 48, T, H, W)}, {"samples": torch.zeros(batch, 64, F), "type": "audio"},
        first_frame={"samples": image} if image is not None else None,
        voice_latent={"samples": voice, "type": "audio"} if voice is not None else None))[0]
    if mode == "distilled":
        scales = (1.0, 1.0, 1.0)
    guider = out(native_nodes.Guider.execute(patcher, pos, *scales, switch, negative=neg))[0]
    if sigmas is None:
        sigmas = out(native_nodes.Sigmas.execute(patcher, mode, 0))[0]
    sampler = sampler or out(native_nodes.NativeSampler.execute(mode))[0]
    noise = noise or out(native_nodes.Noise.execute(seed))[0]
    result = out(ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent))[0]
    video, audio = out(native_nodes.SplitAVLatent.execute(result))
    return video["samples"], audio["samples"]


_DIT = {}


def fp32_model(variant="distill"):
    if variant not in _DIT:
        dit = tiny_dit(variant, seed=3, compute_dtype=torch.float32)
        _DIT[variant] = (dit, native_model.build_patcher(dit))
    return _DIT[variant]


def assert_same(a, b, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    diff = (a.float() - b.float()).abs().max().item()
    assert torch.equal(a.float(), b.float()), f"{what}: max |diff| {diff:.3e}"


def parity(mode, **kw):
    dit, patcher = fp32_model("distill" if mode == "distilled" else "base")
    text = make_text(dit.config.text_in_channels)
    ev, ea = easy_path(dit, text, mode, SEED, **kw)
    nv, na = native_path(patcher, text, mode, SEED, **kw)
    assert_same(nv, ev, f"{mode} video")
    assert_same(na, ea, f"{mode} audio")
    assert torch.isfinite(nv).all() and nv.abs().sum() > 0


@check
def model_is_flow_base_model():
    import comfy.model_base
    import comfy.model_sampling
    dit, patcher = fp32_model()
    model = patcher.model
    assert isinstance(model, comfy.model_base.BaseModel) and model.diffusion_model is dit
    assert isinstance(model.model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
    assert isinstance(model.model_sampling, comfy.model_sampling.CONST)
    assert model.model_sampling.shift == 5.0 and model.model_sampling.multiplier == 1000
    keys = list(model.state_dict())
    assert "diffusion_model.block.layers.0.attention.linear_qkv.weight" in keys, keys[:5]
    assert patcher.model_size() >= sum(p.numel() * p.element_size() for p in dit.parameters())
    assert model.memory_required([2, 1, 48 * T * H * W + 64 * F]) > 0


@check
def model_sampling_sd3_changes_shift():
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    _, patcher = fp32_model()
    shifted = out(ModelSamplingSD3.execute(patcher, 3.0))[0] if hasattr(ModelSamplingSD3, "execute") and \
        not hasattr(ModelSamplingSD3, "patch") else ModelSamplingSD3().patch(patcher, 3.0)[0]
    assert native_sampling.model_shift(shifted) == 3.0 and native_sampling.model_shift(patcher) == 5.0
    s3 = out(native_nodes.Sigmas.execute(shifted, "base", 0))[0]
    s5 = out(native_nodes.Sigmas.execute(patcher, "base", 0))[0]
    assert s3.shape == s5.shape == (33,) and not torch.equal(s3, s5)


@check
def sigmas_match_pack_schedules():
    flow_sigmas = pack_module("happyhorse_core.sampling.scheduler").flow_sigmas
    _, patcher = fp32_model()
    for schedule, n in (("distilled", 8), ("base", 32), ("sr", 5)):
        s = out(native_nodes.Sigmas.execute(patcher, schedule, 0))[0]
        assert torch.equal(s, flow_sigmas(n, 5.0)[0]), schedule
        # the guider's switch test equals the pack's integer timesteps on these schedules
        ts = flow_sigmas(n, 5.0)[1]
        assert [int(float(x) * 1000) for x in s[:-1]] == ts.tolist(), schedule


@check
def parity_distilled():
    parity("distilled")


@check
def parity_distilled_batch2():
    parity("distilled", batch=2)


@check
def parity_base_cfg():
    parity("base")


@check
def parity_i2v_distilled():
    dit, _ = fp32_model()
    parity("distilled", image=make_extras(dit.config.text_in_channels)["image"])


@check
def parity_i2v_base():
    dit, _ = fp32_model()
    parity("base", image=make_extras(dit.config.text_in_channels)["image"])


@check
def parity_voice_distilled():
    dit, _ = fp32_model()
    parity("distilled", voice=make_extras(dit.config.text_in_channels)["voice"])


@check
def parity_voice_base():
    dit, _ = fp32_model()
    ex = make_extras(dit.config.text_in_channels)
    parity("base", voice=ex["voice"], image=ex["image"])


@check
def stock_nodes_run():
    """Core BasicScheduler + lcm + RandomNoise run on the HappyHorse MODEL (approximately, not bit-equal)."""
    dit, patcher = fp32_model()
    text = make_text(dit.config.text_in_channels)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 4).cpu()
    lcm = comfy.samplers.sampler_object("lcm")
    v, a = native_path(patcher, text, "distilled", SEED, noise=ncs.Noise_RandomNoise(SEED), sampler=lcm, sigmas=sigmas)
    assert v.shape == (1, 48, T, H, W) and a.shape == (1, 64, F)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()
    ev, _ = easy_path(dit, text, "distilled", SEED)
    assert not torch.allclose(v, ev, atol=1e-3), "stock lcm + RandomNoise cannot equal the pack's sampler"


@check
def joint_latent_required():
    _, patcher = fp32_model()
    guider = native_sampling.make_guider(patcher)
    guider.set_cfg(1.0, 1.0, 1.0)
    guider.inner_set_conds({"positive": [[torch.randn(1, 4, 128), {}]]})
    sampler = native_sampling.make_sampler("distilled")
    try:
        guider.sample(torch.randn(1, 48, T, H, W), torch.zeros(1, 48, T, H, W), sampler,
                      native_sampling.hh_sigmas("distilled", 2, 5.0), seed=1)
    except ValueError as e:
        assert "HappyHorse Pack AV Latent" in str(e), e
    else:
        raise AssertionError("a video-only latent was accepted")


# ----------------------------------------------------------------------------- core MODEL nodes
@check
def easycache_runs_and_skips():
    """Core EasyCache wraps our forward (packed [B, 1, N] in and out): it runs and skips steps."""
    from comfy_extras.nodes_easycache import EasyCacheNode
    dit, patcher = fresh_dit()
    cached = out(EasyCacheNode.execute(patcher, 3.0, 0.0, 1.0, False))[0]
    text = make_text(dit.config.text_in_channels)
    cv, ca = native_path(cached, text, "distilled", SEED)
    pv, _ = native_path(patcher, text, "distilled", SEED)
    mm.unload_all_models()
    assert cv.shape == pv.shape and torch.isfinite(cv).all() and torch.isfinite(ca).all()
    assert not torch.equal(cv, pv), "EasyCache skipped no step at reuse_threshold 3.0"


@check
def torch_compile_model_per_block():
    """Core TorchCompileModel (inductor, CPU): each layer compiles as its own graph, no recompile for a
    third prompt length, and the clip stays within fp32 rounding of the eager one."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    dit, patcher = fresh_dit()
    compiled = out(TorchCompileModel.execute(patcher, "inductor"))[0]
    cfg = dit.config
    g = torch.Generator().manual_seed(5)
    runs = []
    for n in (6, 4, 9):  # prompt lengths
        text = TextConditioning(positive=torch.randn(n, cfg.text_in_channels, generator=g))
        graphs = counters["stats"]["unique_graphs"]
        cv, _ = native_path(compiled, text, "distilled", SEED)
        runs.append(counters["stats"]["unique_graphs"] - graphs)
        ev, _ = easy_path(dit, text, "distilled", SEED)
        err = (cv - ev).abs().max().item()
        assert err <= 1e-4 * max(1.0, ev.abs().max().item()), f"compiled vs eager max |diff| {err:.3e}"
    mm.unload_all_models()
    assert runs[0] > 0, "nothing was compiled"
    assert runs[2] == 0, f"new graphs per prompt length: {runs}"


# ----------------------------------------------------------------------------- LoRA
native_lora = pack_module("nodes.native_lora")
comfy_ops = pack_module("nodes.comfy_ops")
_tiny_lora = pack_module("happyhorse_core.testing.tiny_lora")
EXPERTS, linear_targets, tiny_lora = _tiny_lora.EXPERTS, _tiny_lora.linear_targets, _tiny_lora.tiny_lora

LORA_TARGETS = ["block.layers.0.attention.linear_qkv", "block.layers.0.mlp.down_proj",
                "block.layers.2.attention.linear_proj", "block.layers.7.mlp.up_gate_proj"]
STRENGTH = 0.7


def fresh_dit(weight_dtype="bf16"):
    """The tiny distill DiT (seed 3, fp32 compute) in bf16 or fp8 (all layers) storage, with its own patcher."""
    SandwichDiT = pack_module("happyhorse_core.dit").SandwichDiT
    Ops = pack_module("happyhorse_core.dit.ops").Ops
    init_random_ = pack_module("happyhorse_core.testing.tiny_dit").init_random_
    tiny_config = pack_module("happyhorse_core.testing.tiny_dit").tiny_config
    dit = init_random_(SandwichDiT(tiny_config(), Ops(weight_dtype=weight_dtype, fp8_scope="all",
                                                      compute_dtype=torch.float32)), 3).eval()
    return dit, native_model.build_patcher(dit)


def merge_reference(dit, lora_sd, strength, form, expert="video"):
    """W' = round_storage(W.float() + (s·alpha/r)·(B @ A)) per target, written into `dit` (the 'merged' model)."""
    import comfy.float
    from comfy.model_patcher import string_to_seed
    sd = dit.state_dict()
    for name, (experts, out, _) in linear_targets().items():
        names = {"peft": (f"diffusion_model.{name}.lora_A.weight", f"diffusion_model.{name}.lora_B.weight", None),
                 "peft_bare": (f"{name}.lora_A.weight", f"{name}.lora_B.weight", None),
                 "expert": (f"{name}.{expert}.lora_A.weight", f"{name}.{expert}.lora_B.weight", None)}.get(form)
        if form == "kohya":
            k = "lora_unet_" + name.replace(".", "_")
            names = (f"{k}.lora_down.weight", f"{k}.lora_up.weight", f"{k}.alpha")
        a_key, b_key, alpha_key = names
        if a_key not in lora_sd:
            continue
        a, b = lora_sd[a_key].float(), lora_sd[b_key].float()
        alpha = float(lora_sd[alpha_key]) / a.shape[0] if alpha_key in lora_sd else 1.0
        w = sd[f"{name}.weight"]
        full = w.float()
        rows = full[EXPERTS.index(expert) * out:(EXPERTS.index(expert) + 1) * out] if form == "expert" else full
        rows += ((strength * alpha) * torch.mm(b, a)).type(torch.float32)
        w.copy_(comfy.float.stochastic_rounding(full, w.dtype, seed=string_to_seed(f"diffusion_model.{name}.weight")))
    return dit


def lora_run(patcher, lora_sd, form, core=False):
    import comfy.sd
    if core:
        lora_patcher = comfy.sd.load_lora_for_models(patcher, None, lora_sd, STRENGTH, 0)[0]
    else:
        lora_patcher = native_lora.apply_lora(patcher, lora_sd, STRENGTH, f"tiny_{form}.safetensors")
    text = make_text(patcher.model.diffusion_model.config.text_in_channels)
    try:
        return native_path(lora_patcher, text, "distilled", SEED), lora_patcher
    finally:
        mm.unload_all_models()


def lora_equals_merged(form, core=False, weight_dtype="bf16", **lora_kw):
    dit, patcher = fresh_dit(weight_dtype)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    lora_sd = tiny_lora(LORA_TARGETS if form != "expert" else LORA_TARGETS[:1], form, **lora_kw)
    (nv, na), _ = lora_run(patcher, lora_sd, form, core)
    ref = merge_reference(fresh_dit(weight_dtype)[0], lora_sd, STRENGTH, form, lora_kw.get("expert", "video"))
    text = make_text(dit.config.text_in_channels)
    ev, ea = easy_path(ref, text, "distilled", SEED)
    assert_same(nv, ev, f"{form} LoRA video")
    assert_same(na, ea, f"{form} LoRA audio")
    plain, _ = easy_path(dit, text, "distilled", SEED)
    assert not torch.equal(plain, nv), "the LoRA changed nothing"
    for k, v in dit.state_dict().items():  # unpatched after unload (fp8: never patched in place)
        assert torch.equal(v, before[k]), k


@check
def lora_peft_core_loader():
    lora_equals_merged("peft", core=True)


@check
def lora_kohya_alpha_core_loader():
    lora_equals_merged("kohya", core=True, alpha=1.0)


@check
def lora_peft_bare_keys():
    lora_equals_merged("peft_bare")


@check
def lora_fp8_patched_at_fetch_time():
    dit, patcher = fresh_dit("fp8_e4m3fn")
    lora_sd = tiny_lora(LORA_TARGETS, "peft")
    lora_patcher = native_lora.apply_lora(patcher, lora_sd, STRENGTH, "tiny_fp8.safetensors")
    before = dit.block.layers[0].attention.linear_qkv.weight.clone()
    mm.load_models_gpu([lora_patcher])
    layer = dit.block.layers[0].attention.linear_qkv
    assert layer.weight.dtype == torch.float8_e4m3fn, layer.weight.dtype
    assert torch.equal(layer.weight.view(torch.uint8), before.view(torch.uint8)), "fp8 weight was rewritten"
    fetch_patch = native_model.comfy_classes().FetchTimePatch
    assert any(isinstance(f, fetch_patch) for f in layer.weight_function), layer.weight_function
    mm.unload_all_models()
    assert not layer.weight_function, "fetch-time patch left behind after unload"
    lora_equals_merged("peft", weight_dtype="fp8_e4m3fn")


@check
def lora_on_gemm_padded_weights():
    """load_dit zero-pads GEMM widths (dit/align.py); a LoRA shaped like the published weights must patch
    exactly the published rows/columns (bit-equal to a merge on the unpadded model) and keep the padding 0."""
    import comfy.sd
    align = pack_module("happyhorse_core.dit.align")
    dit = fresh_dit()[0]
    assert align.align_gemms_(dit) > 0, "the tiny config has nothing to pad"
    patcher = native_model.build_patcher(dit)
    lora_sd = tiny_lora(LORA_TARGETS, "peft")
    lora_patcher = comfy.sd.load_lora_for_models(patcher, None, lora_sd, STRENGTH, 0)[0]
    ref = merge_reference(fresh_dit()[0], lora_sd, STRENGTH, "peft").state_dict()
    mm.load_models_gpu([lora_patcher])
    try:
        got = dit.state_dict()  # align's hook trims to the published shapes
        for name in LORA_TARGETS:
            assert torch.equal(got[f"{name}.weight"], ref[f"{name}.weight"]), name
        padded = [m for m in dit.modules() if getattr(m, "published", None) is not None]
        assert padded
        for m in padded:
            w = m.weight.view(m.experts, -1, m.in_features)
            assert not w[:, m.published[0]:].any() and not w[..., m.published[1]:].any(), "padding changed"
    finally:
        mm.unload_all_models()


@check
def lora_partial_load_equals_merged():
    dit, patcher = fresh_dit()
    lora_sd = tiny_lora(LORA_TARGETS, "peft")
    lora_patcher = native_lora.apply_lora(patcher, lora_sd, STRENGTH, "tiny.safetensors")
    lora_patcher.load(torch.device("cpu"), lowvram_model_memory=1, full_load=False)
    try:
        assert comfy_ops.offloaded_modules(dit), "nothing was offloaded"
        text = make_text(dit.config.text_in_channels)
        pv, pa = easy_path(dit, text, "distilled", SEED)
    finally:
        lora_patcher.unpatch_model(torch.device("cpu"))
    ref = merge_reference(fresh_dit()[0], lora_sd, STRENGTH, "peft")
    ev, ea = easy_path(ref, make_text(dit.config.text_in_channels), "distilled", SEED)
    assert_same(pv, ev, "partial-load LoRA video")
    assert_same(pa, ea, "partial-load LoRA audio")


@check
def lora_one_expert_changes_only_its_rows():
    for expert in ("audio", "text"):
        dit, patcher = fresh_dit()
        target = "block.layers.0.attention.linear_qkv"
        experts, out, _ = linear_targets()[target]
        before = dit.state_dict()[f"{target}.weight"].clone()
        lora_sd = tiny_lora([target], "expert", expert=expert)
        lora_patcher = native_lora.apply_lora(patcher, lora_sd, STRENGTH, "tiny_expert.safetensors")
        mm.load_models_gpu([lora_patcher])
        after = dit.state_dict()[f"{target}.weight"].clone()
        mm.unload_all_models()
        m = EXPERTS.index(expert)
        inside = slice(m * out, (m + 1) * out)
        changed = (after != before).any(dim=1)
        assert changed[inside].any(), f"{expert} rows unchanged"
        outside = torch.ones(experts * out, dtype=torch.bool)
        outside[inside] = False
        assert not changed[outside].any(), f"rows outside the {expert} expert changed"
    lora_equals_merged("expert", expert="audio")


@check
def lora_matching_nothing_is_an_error():
    _, patcher = fresh_dit()
    bogus = {"transformer.blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 8),
             "transformer.blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, 2)}
    try:
        native_lora.apply_lora(patcher, bogus, 1.0, "someone_elses_lora.safetensors")
    except ValueError as e:
        assert "someone_elses_lora.safetensors" in str(e), e
    else:
        raise AssertionError("a LoRA matching no key was accepted")


if __name__ == "__main__":
    report(only=sys.argv[2:], around=torch.inference_mode)  # ComfyUI runs every node in inference mode
