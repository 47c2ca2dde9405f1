"""The reference's recipe around the DiT: seeds and noise streams, the SR stage's options, attention choice."""
from __future__ import annotations

import types

import pytest
import torch

from happyhorse_core.dit import attention as attn
from happyhorse_core.sampling import noise
from happyhorse_core.sampling.guidance import GuidanceConfig
from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate
from happyhorse_core.sampling.scheduler import zero_snr_sigmas
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve
from happyhorse_core.testing.tiny_dit import tiny_dit

GEOM = dict(latent_frames=3, latent_h=4, latent_w=6, audio_frames=9)


@pytest.fixture(scope="module")
def models():
    return tiny_dit("distill", seed=0), tiny_dit("sr_540p", seed=5)


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(7)
    return TextConditioning(torch.randn(6, 3584, generator=g), torch.randn(4, 3584, generator=g))


def test_batch_seed_wraps_at_the_widget_maximum():
    top = 2**64 - 1
    assert noise.batch_seed(top, 0) == top and noise.batch_seed(top, 1) == 0 and noise.batch_seed(top, 3) == 2
    assert noise.batch_seed(5, 2) == 7
    noise.make_generator(noise.batch_seed(top, 1))  # a valid seed, no overflow error


def test_sr_continues_the_samplers_stream_through_a_saved_state(models, text):
    """What the nodes do (state saved on the LATENT, restored by SR) equals one generator through both stages."""
    base, sr = models
    gen = noise.make_generator(11)
    v, a = generate(base, text, opts=SamplingOptions(seed=11), generator=gen, **GEOM)
    saved = noise.generator_state(gen)
    one_stream, _ = super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=gen, opts=SROptions(steps=2))
    restored, _ = super_resolve(sr, v, a, text, latent_h=8, latent_w=12,
                                generator=noise.restore_generator(saved), opts=SROptions(steps=2))
    assert torch.equal(one_stream, restored)
    fresh, _ = super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=noise.make_generator(11),
                             opts=SROptions(steps=2))
    assert not torch.equal(fresh, one_stream)  # a fresh seed is a different stream


def test_sr_renoise_level(models, text):
    """Index 220 = the reference's a = 0.8389; index 0 keeps the upsampled clip and draws no video noise."""
    base, sr = models
    v, a = generate(base, text, opts=SamplingOptions(seed=3), **GEOM)
    assert SROptions().renoise_keep == pytest.approx(0.8389, abs=1e-4)
    assert SROptions(renoise_index=0).renoise_keep == float(zero_snr_sigmas()[0])
    gen = noise.make_generator(0)
    super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=gen, opts=SROptions(steps=1, renoise_index=0))
    audio_only = noise.make_generator(0)
    noise.randn(a.shape, audio_only)  # index 0: only the audio-context noise is drawn (as the reference)
    assert torch.equal(gen.get_state(), audio_only.get_state())
    gen = noise.make_generator(0)
    super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=gen, opts=SROptions(steps=1))
    assert not torch.equal(gen.get_state(), audio_only.get_state())
    with pytest.raises(ValueError, match="renoise_index"):
        SROptions(renoise_index=1000)


def test_sr_cfg_scale_is_used_and_cancel_is_checked_between_forwards(models, text):
    base, sr = models
    v, a = generate(base, text, opts=SamplingOptions(seed=3), **GEOM)
    run = lambda scale: super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=noise.make_generator(1),  # noqa: E731
                                      opts=SROptions(steps=1, cfg=True, guidance=GuidanceConfig(sr_video_scale=scale)))
    assert not torch.equal(run(1.0)[0], run(1.5)[0])  # below the 2.0 cap of the first 13 latent frames
    calls = []

    class Stop(Exception):
        pass

    def interrupt():
        calls.append(1)
        if len(calls) == 2:  # the check between the conditional and the negative forward
            raise Stop

    with pytest.raises(Stop):
        super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=noise.make_generator(1),
                      opts=SROptions(steps=2, cfg=True), hooks=Hooks(interrupt=interrupt))


def test_attention_auto_never_picks_flash_for_fp32(monkeypatch):
    monkeypatch.setattr(attn, "_import_first", lambda *names: types.SimpleNamespace())  # "flash-attn installed"
    cuda = torch.device("cuda")
    assert attn.resolve_backend("auto", cuda, torch.bfloat16) == "flash"
    assert attn.resolve_backend("auto", cuda, torch.float16) == "flash"
    assert attn.resolve_backend("auto", cuda, torch.float32) == "sdpa"
    attn._warned.clear()
    assert attn.resolve_backend("flash", cuda, torch.float32) == "sdpa"  # asked for explicitly: falls back


def test_generate_keeps_everything_on_the_generator_device(models, text):
    """The CUDA-noise option puts the noise (and so the latents) on the generator's device; results come back on
    the CPU. Checked here with a CPU generator and a voice latent and image latent from elsewhere."""
    base, _ = models
    image = torch.randn(1, 48, 1, 4, 6)
    voice = torch.randn(1, 9, 64)
    v, a = generate(base, text, opts=SamplingOptions(seed=2), image_latent=image, audio_latent=voice, **GEOM)
    assert v.device.type == a.device.type == "cpu" and torch.equal(v[:, :, :1], image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_matches_the_reference_global_stream():
    """The reference: torch.manual_seed(s); torch.randn(..., device="cuda") twice. Ours: one CUDA generator."""
    torch.manual_seed(42)
    ref = [torch.randn(1, 9, 64, device="cuda"), torch.randn(1, 48, 3, 4, 6, device="cuda")]
    gen = noise.make_generator(42, "cuda")
    ours = noise.initial_noise(gen, 9, 3, 4, 6)
    assert torch.equal(ref[0], ours[0]) and torch.equal(ref[1], ours[1])


def test_vae_runs_in_fp32_for_the_block_and_is_restored():
    """The Voice Reference / Decode Audio option: a ComfyUI VAE loaded in half precision runs in fp32."""
    from pack_import import pack_module
    cb = pack_module("nodes.comfy_bridge")
    vae = types.SimpleNamespace(first_stage_model=torch.nn.Linear(4, 4).to(torch.float16), vae_dtype=torch.float16)
    with cb.vae_dtype(vae, torch.float32):
        assert vae.vae_dtype == torch.float32 and vae.first_stage_model.weight.dtype == torch.float32
    assert vae.vae_dtype == torch.float16 and vae.first_stage_model.weight.dtype == torch.float16
    with cb.vae_dtype(vae, None):  # option off: untouched
        assert vae.first_stage_model.weight.dtype == torch.float16


def test_node_warnings_are_logged_every_run(caplog):
    """nodes/node_warnings.collect: the core's Python warnings and the node's notes, logged on every run."""
    import logging
    import warnings

    from pack_import import pack_module
    nw = pack_module("nodes.node_warnings")
    with caplog.at_level(logging.WARNING, logger="HappyHorse"):
        for _ in range(3):
            with nw.collect(None) as note:
                warnings.warn("size 80x72 is not a multiple of 32", UserWarning)
                note("voice cut")
    got = [r.getMessage() for r in caplog.records]
    assert got == ["HappyHorse: voice cut", "HappyHorse: size 80x72 is not a multiple of 32"] * 3
