"""End-to-end sampling with tiny random models: modes, determinism, i2v, voice, SR, hooks."""
from __future__ import annotations

import pytest
import torch

from happyhorse_core.sampling.noise import make_generator
from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate
from happyhorse_core.sampling.super_resolution import SROptions, super_resolve
from happyhorse_core.testing.tiny_dit import tiny_dit

GEOM = dict(latent_frames=3, latent_h=4, latent_w=6, audio_frames=9)


@pytest.fixture(scope="module")
def model():
    return tiny_dit("distill", seed=0)


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(7)
    return TextConditioning(torch.randn(6, 3584, generator=g), torch.randn(4, 3584, generator=g))


def run(model, text, **kw):
    opts = kw.pop("opts", SamplingOptions(mode="distilled", seed=kw.pop("seed", 1)))
    return generate(model, text, opts=opts, **GEOM, **kw)


def test_distilled_shapes_and_determinism(model, text):
    v1, a1 = run(model, text, seed=1)
    v2, a2 = run(model, text, seed=1)
    v3, _ = run(model, text, seed=2)
    assert v1.shape == (1, 48, 3, 4, 6) and a1.shape == (1, 9, 64)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    assert not torch.allclose(v1, v3)
    assert torch.isfinite(v1).all() and torch.isfinite(a1).all()


def test_base_mode_with_cfg_runs_and_differs_from_distilled(model, text):
    base = run(model, text, opts=SamplingOptions(mode="base", steps=3, seed=1))
    dist = run(model, text, opts=SamplingOptions(mode="distilled", steps=3, seed=1))
    assert base[0].shape == dist[0].shape and not torch.allclose(base[0], dist[0])


def test_base_mode_needs_negative(model, text):
    with pytest.raises(ValueError, match="negative"):
        run(model, TextConditioning(text.positive), opts=SamplingOptions(mode="base", steps=2))


def test_image_to_video_keeps_frame_zero(model, text):
    img = torch.randn(1, 48, 1, 4, 6, generator=torch.Generator().manual_seed(3))
    v, _ = run(model, text, image_latent=img)
    assert torch.equal(v[:, :, :1], img)


def test_voice_latent_is_held_in_base_mode(model, text):
    voice = torch.randn(1, 9, 64, generator=torch.Generator().manual_seed(4))
    _, a = run(model, text, audio_latent=voice, opts=SamplingOptions(mode="base", steps=3, seed=1))
    assert torch.equal(a, voice)
    with pytest.raises(ValueError, match="frames but the clip needs"):
        run(model, text, audio_latent=voice[:, :5])


def test_progress_preview_and_interrupt(model, text):
    seen, previews = [], []
    run(model, text, hooks=Hooks(progress=lambda d, t: seen.append((d, t)), preview=lambda i, x: previews.append(x.shape)))
    assert seen == [(i, 8) for i in range(1, 9)] and len(previews) == 8

    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        run(model, text, hooks=Hooks(interrupt=interrupt))
    assert len(calls) == 3  # stopped before the third step ran


def test_super_resolution_stage(model, text):
    sr = tiny_dit("sr_1080p", seed=5)
    gen = make_generator(11)
    v, a = generate(model, text, opts=SamplingOptions(seed=11), generator=gen, **GEOM)
    up, audio = super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=gen, opts=SROptions(steps=2))
    assert up.shape == (1, 48, 3, 8, 12) and torch.equal(audio, a)
    up_cfg, _ = super_resolve(sr, v, a, text, latent_h=8, latent_w=12, generator=make_generator(1),
                              opts=SROptions(steps=2, cfg=True))
    assert up_cfg.shape == up.shape
    with pytest.raises(ValueError, match="sr_540p or sr_1080p"):
        super_resolve(model, v, a, text, latent_h=8, latent_w=12, generator=gen)


def test_bad_options():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        SamplingOptions(steps=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        SamplingOptions(mode="turbo")


def test_runs_under_inference_mode_like_comfyui(model, text):
    """ComfyUI executes nodes under torch.inference_mode(): inputs are inference tensors."""
    ref_v, ref_a = run(model, text, seed=3)
    with torch.inference_mode():
        inf_text = TextConditioning(text.positive.clone(), text.negative.clone())
        v, a = run(model, inf_text, seed=3)
        base = run(model, inf_text, opts=SamplingOptions(mode="base", steps=2, seed=3))
    assert torch.equal(v, ref_v) and torch.equal(a, ref_a)
    assert base[0].shape == ref_v.shape
