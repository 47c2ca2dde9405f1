"""Samplers, guidance and noise order (MODEL_SPEC §4; golden/README.md §2)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from happyhorse_core.sampling import guidance
from happyhorse_core.sampling import noise
from happyhorse_core.sampling.guidance import GuidanceConfig
from happyhorse_core.sampling.scheduler import (
    SR_RENOISE_INDEX,
    FlowUniPC,
    flow_sigmas,
    sr_audio_context,
    sr_renoise,
    step_ddim,
    zero_snr_sigmas,
)

ATOL, RTOL = 1e-6, 1e-5  # golden README §2: elementwise fp32

# MODEL_SPEC §4.1 tables (sigmas printed to 6 digits there)
SPEC_TIMESTEPS = {
    8: [999, 972, 937, 892, 833, 749, 624, 416],
    5: [999, 952, 882, 768, 555],
    32: [999, 993, 986, 979, 972, 964, 955, 946, 937, 927, 916, 904, 892, 879, 865, 849, 833, 814, 795,
         773, 749, 723, 694, 661, 624, 583, 535, 480, 416, 340, 249, 138],
}
SPEC_SIGMAS = {
    8: [0.9998, 0.972006, 0.937265, 0.892602, 0.833055, 0.7497, 0.624687, 0.416389, 0.0],
    5: [0.9998, 0.952154, 0.882093, 0.768935, 0.555247, 0.0],
}


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(str(golden_dir / "scheduler_case1.safetensors"))


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("n", [8, 5, 32])
def test_flow_sigmas_match_spec_tables(n):
    sigmas, timesteps = flow_sigmas(n, shift=5.0)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (n + 1,)
    assert timesteps.dtype == torch.int64 and timesteps.tolist() == SPEC_TIMESTEPS[n]
    assert sigmas[-1].item() == 0.0
    if n in SPEC_SIGMAS:
        torch.testing.assert_close(sigmas, torch.tensor(SPEC_SIGMAS[n]), atol=1e-6, rtol=0)
    else:
        assert abs(sigmas[0].item() - 0.9998) < 1e-6 and abs(sigmas[-2].item() - 0.138765) < 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("name,n", [("distill8", 8), ("sr5", 5), ("base32", 32)])
def test_flow_sigmas_equal_golden(golden, name, n):
    sigmas, timesteps = flow_sigmas(n)
    assert torch.equal(sigmas, golden[f"{name}.sigmas"])
    assert torch.equal(timesteps, golden[f"{name}.timesteps"])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_flow_sigmas_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError, match="num_steps"):
        flow_sigmas(bad)


# ----------------------------------------------------------------------------- golden trajectories
@pytest.mark.parity
def test_ddim_trajectory_matches_golden(golden):
    sigmas, _ = flow_sigmas(8)
    x = golden["ddim.sample_0"]
    for i in range(8):
        x = step_ddim(golden[f"ddim.velocity_{i}"], sigmas[i], sigmas[i + 1], x, golden[f"ddim.noise_{i}"])
        _close(x, golden[f"ddim.sample_{i + 1}"], f"ddim sample {i + 1}")


@pytest.mark.parity
@pytest.mark.parametrize("n", [32, 8])
def test_unipc_trajectory_matches_golden(golden, n):
    solver = FlowUniPC(n, shift=5.0)
    x = golden[f"unipc{n}.sample_0"]
    for i in range(n):
        x = solver.step(golden[f"unipc{n}.velocity_{i}"], i, x)
        _close(x, golden[f"unipc{n}.sample_{i + 1}"], f"unipc{n} sample {i + 1}")


@pytest.mark.parity
def test_zero_snr_table_matches_golden(golden):
    _close(zero_snr_sigmas(1000), golden["zerosnr.sigmas_1000_flip"], "zero-SNR sigmas")


# ----------------------------------------------------------------------------- update rules
def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_final_step_returns_exact_x0_prediction():
    shape = (1, 4, 2, 3, 3)
    x, v, eps = _random(shape, 1), _random(shape, 2), _random(shape, 3)
    sigma = torch.tensor(0.4163888)
    assert torch.equal(step_ddim(v, sigma, 0.0, x, eps), x - sigma * v)
    for n in (1, 2, 8):
        solver = FlowUniPC(n)
        sample = x
        for i in range(n):
            vel = _random(shape, 10 + i)
            out = solver.step(vel, i, sample)
            if i < n - 1:
                sample = out
        assert torch.equal(out, sample - solver.sigmas[n - 1] * vel), f"{n}-step UniPC final step is not x0"


def test_unipc_is_exact_on_a_straight_flow():
    # x_σ = (1-σ)·x0 + σ·ε with the true velocity ε − x0: every consistent step lands on the path
    shape = (2, 3, 4)
    x0, eps = _random(shape, 4), _random(shape, 5)
    solver = FlowUniPC(12)
    x = (1 - solver.sigmas[0]) * x0 + solver.sigmas[0] * eps
    for i in range(12):
        x = solver.step(eps - x0, i, x)
        expected = (1 - solver.sigmas[i + 1]) * x0 + solver.sigmas[i + 1] * eps
        torch.testing.assert_close(x, expected, atol=2e-5, rtol=1e-5)


def test_unipc_instances_keep_separate_state_and_reset():
    n, shape = 6, (1, 5, 64)
    vels_a = [_random(shape, 20 + i) for i in range(n)]
    vels_b = [_random(shape, 40 + i) for i in range(n)]

    def run(solver, vels, x):
        for i, v in enumerate(vels):
            x = solver.step(v, i, x)
        return x

    alone_a = run(FlowUniPC(n), vels_a, _random(shape, 7))
    alone_b = run(FlowUniPC(n), vels_b, _random(shape, 8))
    sa, sb = FlowUniPC(n), FlowUniPC(n)
    xa, xb = _random(shape, 7), _random(shape, 8)
    for i in range(n):  # interleaved like the video/audio pair in the pipeline
        xa, xb = sa.step(vels_a[i], i, xa), sb.step(vels_b[i], i, xb)
    assert torch.equal(xa, alone_a) and torch.equal(xb, alone_b)
    sa.reset()
    assert torch.equal(run(sa, vels_a, _random(shape, 7)), alone_a)


def test_unipc_rejects_out_of_order_steps():
    solver = FlowUniPC(4)
    x = _random((2, 2), 1)
    with pytest.raises(ValueError, match="expected 0"):
        solver.step(x, 1, x)
    solver.step(x, 0, x)
    with pytest.raises(ValueError, match="expected 1"):
        solver.step(x, 0, x)


def test_step_functions_reject_shape_mismatch():
    with pytest.raises(ValueError, match="share one shape"):
        step_ddim(torch.zeros(2, 3), 0.5, 0.4, torch.zeros(2, 3), torch.zeros(3, 2))


# ----------------------------------------------------------------------------- SR re-noise
def test_zero_snr_sr_coefficient():
    table = zero_snr_sigmas()
    assert table.shape == (1000,) and table.dtype == torch.float32 and table[-1].item() == 0.0
    assert abs(table[0].item() - 0.99957) < 1e-5
    a = table[SR_RENOISE_INDEX].item()
    assert SR_RENOISE_INDEX == 220 and abs(a - 0.8389104) < 1e-7
    assert abs((1 - a * a) ** 0.5 - 0.5442696) < 1e-6


def test_sr_renoise_and_audio_context():
    x, eps = _random((1, 48, 2, 4, 6), 1), _random((1, 48, 2, 4, 6), 2)
    a = zero_snr_sigmas()[SR_RENOISE_INDEX]
    torch.testing.assert_close(sr_renoise(x, eps), a * x + torch.sqrt(1 - a * a) * eps, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sr_renoise(x, eps, a=0.5), 0.5 * x + 0.75**0.5 * eps, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="upsampled latent"):
        sr_renoise(x, eps[:, :, :1])
    audio, eps_a = _random((1, 9, 64), 3), _random((1, 9, 64), 4)
    torch.testing.assert_close(sr_audio_context(audio, eps_a), 0.7 * eps_a + 0.3 * audio, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- guidance
def test_guidance_switch_points_for_32_steps():
    cfg = GuidanceConfig()
    _, timesteps = flow_sigmas(32)
    scales = [guidance.video_scale(cfg, t) for t in timesteps]
    assert scales == [5.0] * 27 + [2.0] * 5
    assert cfg.audio_scale == 5.0
    assert guidance.video_scale(cfg, 501) == 5.0 and guidance.video_scale(cfg, 500) == 2.0


def test_apply_cfg_formula():
    vc, vu = _random((1, 4, 3), 1), _random((1, 4, 3), 2)
    torch.testing.assert_close(guidance.apply_cfg(vc, vu, 5.0), vu + 5.0 * (vc - vu))
    assert torch.equal(guidance.apply_cfg(vc, vu, 1.0), vu + (vc - vu))
    with pytest.raises(ValueError, match="differ in shape"):
        guidance.apply_cfg(vc, vu[:, :2], 2.0)


def test_sr_video_scale_cfg_trick():
    cfg = GuidanceConfig()
    scale = guidance.sr_video_scale(cfg, 20)
    assert scale.shape == (1, 1, 20, 1, 1) and scale.dtype == torch.float32
    assert scale[0, 0, :, 0, 0].tolist() == [2.0] * 13 + [3.5] * 7
    assert guidance.sr_video_scale(cfg, 5).flatten().tolist() == [2.0] * 5
    no_trick = GuidanceConfig(sr_cfg_trick=False)
    assert guidance.sr_video_scale(no_trick, 16).flatten().tolist() == [3.5] * 16
    low = GuidanceConfig(sr_video_scale=1.5)
    assert guidance.sr_video_scale(low, 14).flatten().tolist() == [1.5] * 14
    vc, vu = _random((1, 48, 20, 2, 2), 1), _random((1, 48, 20, 2, 2), 2)
    mixed = guidance.apply_cfg(vc, vu, scale)
    torch.testing.assert_close(mixed[:, :, 13:], vu[:, :, 13:] + 3.5 * (vc - vu)[:, :, 13:])
    torch.testing.assert_close(mixed[:, :, :13], vu[:, :, :13] + 2.0 * (vc - vu)[:, :, :13])


def test_guidance_config_rejects_negative_scale():
    with pytest.raises(ValueError, match="video_scale"):
        GuidanceConfig(video_scale=-1.0)


# ----------------------------------------------------------------------------- noise order
def test_noise_order_and_determinism():
    F, T, h, w = 9, 3, 4, 6
    audio, video = noise.initial_noise(noise.make_generator(42), F, T, h, w)
    ref = torch.Generator().manual_seed(42)
    assert torch.equal(audio, torch.randn(1, F, 64, generator=ref))  # audio is drawn first
    assert torch.equal(video, torch.randn(1, 48, T, h, w, generator=ref))
    assert audio.dtype == video.dtype == torch.float32 and video.device.type == "cpu"

    gen = noise.make_generator(42)
    noise.initial_noise(gen, F, T, h, w)
    step_v, step_a = noise.distill_step_noise(gen, video.shape, audio.shape)
    assert torch.equal(step_v, torch.randn(video.shape, generator=ref))  # video, then audio
    assert torch.equal(step_a, torch.randn(audio.shape, generator=ref))
    up_shape = (1, 48, T, 2 * h, 2 * w)
    sr_v, sr_a = noise.sr_noise(gen, up_shape, audio.shape)
    assert torch.equal(sr_v, torch.randn(up_shape, generator=ref))
    assert torch.equal(sr_a, torch.randn(audio.shape, generator=ref))

    again = noise.initial_noise(noise.make_generator(42), F, T, h, w)
    other = noise.initial_noise(noise.make_generator(43), F, T, h, w)
    assert torch.equal(again[0], audio) and torch.equal(again[1], video)
    assert not torch.equal(other[1], video)


def test_noise_without_audio_draws_video_first():
    none_audio, video = noise.initial_noise(noise.make_generator(7), 9, 3, 4, 6, draw_audio=False)
    assert none_audio is None
    assert torch.equal(video, torch.randn(1, 48, 3, 4, 6, generator=torch.Generator().manual_seed(7)))


def test_noise_rejects_bad_seed_and_shape():
    with pytest.raises(ValueError, match="seed"):
        noise.make_generator(-1)
    with pytest.raises(ValueError, match="positive sizes"):
        noise.randn((1, 0, 64), noise.make_generator(1))
