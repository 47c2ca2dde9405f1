"""Sampling schedules and update rules of daVinci-MagiHuman (MODEL_SPEC §4).

The model is a flow-matching velocity predictor: x_σ = (1 − σ)·x0 + σ·ε and v ≈ ε − x0, so
x0 = x − σ·v. Two update rules are used by the reference pipeline:

* base / SR models: flow-matching UniPC (bh2, order 2, x0-prediction, UniC corrector from the
  second step, lower-order final step) — `FlowUniPC`, one instance per modality because the
  solver keeps a history of x0 predictions;
* distilled model: a re-noising DDIM-like update with fresh noise every step — `step_ddim`.
(The reference also has an SDE update, off by default; nothing here offers it, so it is not ported.)

The SR stage also re-noises the upsampled latent with a VP mix whose coefficient comes from a
zero-terminal-SNR DDPM table (`zero_snr_sigmas`, `sr_renoise`).

Everything is stateless except `FlowUniPC`; noise is always passed in by the caller
(see `noise.py` for the reference draw order). Scalar coefficients are computed as fp32
tensors, as the reference does, so trajectories match it to float rounding.
"""
from __future__ import annotations

import math

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SHIFT = 5.0
SOLVER_ORDER = 2

SR_RENOISE_INDEX = 220  # `noise_value` of the SR stage: index into zero_snr_sigmas()
SR_AUDIO_NOISE_SCALE = 0.7  # audio fed to the SR DiT = 0.7·ε + 0.3·base audio

Scalar = float | torch.Tensor


# ---------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------
def flow_sigmas(num_steps: int, shift: float = DEFAULT_SHIFT) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted flow sigmas and integer timesteps for `num_steps` sampling steps (§4.1).

    Returns (sigmas [N+1] fp32 ending in 0, timesteps [N] int64 = trunc(1000·σ)).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (8 distill, 32 base, 5 SR), got {num_steps!r}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite positive number (reference: 5.0), got {shift!r}")
    # Training table: σ = 1 − linspace(1, 1/1000, 1000) reversed, stored as fp32; its first
    # entry (0.999 rounded to fp32) is σ_max, its last (0) is σ_min.
    sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    sigmas = np.linspace(sigma_max, 0.0, num_steps + 1)[:-1]  # fp64
    sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # truncation
    sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
    return sigmas, timesteps


def zero_snr_sigmas(num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """sqrt(ᾱ) of the SD-style scaled-linear DDPM schedule, rescaled to zero terminal SNR (§4.5).

    Returns [num_timesteps] fp32; index 0 ≈ 0.99957, the last index is exactly 0.
    """
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an int >= 2 (reference: 1000), got {num_timesteps!r}")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas.numpy())  # fp64
    s = torch.tensor(alphas_cumprod, dtype=torch.float32).sqrt()
    s_first, s_last = s[0].clone(), s[-1].clone()
    s = s - s_last
    s = s * (s_first / (s_first - s_last))
    return s


def sr_renoise(latent_up: torch.Tensor, noise: torch.Tensor, a: Scalar | None = None) -> torch.Tensor:
    """VP-style re-noising of the upsampled base latent before the SR DiT: a·x + sqrt(1 − a²)·ε.

    `a` defaults to zero_snr_sigmas()[220] = 0.8389104.
    """
    if noise.shape != latent_up.shape:
        raise ValueError(f"SR noise shape {tuple(noise.shape)} must equal the upsampled latent {tuple(latent_up.shape)}")
    if a is None:
        a = zero_snr_sigmas()[SR_RENOISE_INDEX]
    a = torch.as_tensor(a, dtype=torch.float32)
    if not 0.0 <= float(a) <= 1.0:
        raise ValueError(f"SR re-noise coefficient a must lie in [0, 1], got {float(a)}")
    return latent_up * a + noise * (1 - a**2) ** 0.5


def sr_audio_context(base_audio: torch.Tensor, noise: torch.Tensor,
                     noise_scale: float = SR_AUDIO_NOISE_SCALE) -> torch.Tensor:
    """Audio latent shown to the SR DiT as context: noise_scale·ε + (1 − noise_scale)·audio (§4.5 item 5)."""
    if noise.shape != base_audio.shape:
        raise ValueError(f"SR audio noise shape {tuple(noise.shape)} must equal the audio latent {tuple(base_audio.shape)}")
    if not 0.0 <= noise_scale <= 1.0:
        raise ValueError(f"sr audio noise_scale must lie in [0, 1] (reference: 0.7), got {noise_scale}")
    return noise * noise_scale + base_audio * (1 - noise_scale)


# ---------------------------------------------------------------------------------------
# single-step updates (stateless)
# ---------------------------------------------------------------------------------------
def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"sampler inputs must share one shape, got {shapes}")


def step_ddim(velocity: torch.Tensor, sigma: Scalar, sigma_next: Scalar, sample: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """Distilled-model update (§4.3): x0 = x − σ·v, then re-noise to σ' with fresh noise ε.

    x_next = σ'·ε + (1 − σ')·x0; with σ' = 0 this is exactly x0.
    """
    _check_same_shape(velocity=velocity, sample=sample, noise=noise)
    x0 = sample - sigma * velocity
    return sigma_next * noise + (1 - sigma_next) * x0


# ---------------------------------------------------------------------------------------
# UniPC multistep solver
# ---------------------------------------------------------------------------------------
def _log_snr(sigma: torch.Tensor) -> torch.Tensor:
    """λ = log α − log σ with α = 1 − σ (flow convention); +inf at σ = 0."""
    return torch.log(1 - sigma) - torch.log(sigma)


class FlowUniPC:
    """Flow-matching UniPC: bh2, order 2, x0-prediction, UniC corrector, lower-order final (§4.2).

    Keep one instance per modality (video and audio have separate histories) and call
    `step(velocity, i, sample)` for i = 0 … num_steps − 1 in order; it returns the sample at
    sigmas[i + 1]. The last step (σ' = 0) returns the x0 prediction of that step.
    """

    def __init__(self, num_steps: int, shift: float = DEFAULT_SHIFT):
        self.sigmas, self.timesteps = flow_sigmas(num_steps, shift)  # [N+1] fp32, [N] int64
        self.num_steps = num_steps
        self.reset()

    @classmethod
    def from_sigmas(cls, sigmas: torch.Tensor) -> "FlowUniPC":
        """A solver over a given descending schedule [N+1] ending in 0 (e.g. a host's SIGMAS).

        The coefficients are computed from an fp32 CPU copy, as for `flow_sigmas`, so a schedule
        equal to flow_sigmas(N, shift)[0] gives bit-identical steps."""
        sig = torch.as_tensor(sigmas).detach().to("cpu", torch.float32).clone()
        if sig.ndim != 1 or sig.numel() < 2:
            raise ValueError(f"UniPC needs a 1-D schedule of at least 2 sigmas, got shape {tuple(sig.shape)}")
        if float(sig[-1]) != 0.0 or bool((sig[1:] >= sig[:-1]).any()) or float(sig[0]) >= 1.0:
            raise ValueError("UniPC needs strictly descending sigmas below 1 that end in 0 (a HappyHorse Sigmas "
                             f"schedule), got {sig.tolist()}")
        solver = cls.__new__(cls)
        solver.sigmas = sig
        solver.timesteps = (sig[:-1].double() * NUM_TRAIN_TIMESTEPS).to(torch.int64)
        solver.num_steps = sig.numel() - 1
        solver.reset()
        return solver

    def reset(self) -> None:
        """Forget the history so the instance can sample again from step 0."""
        self._next_index = 0
        self._x0_history: list[torch.Tensor] = []  # the last ≤ 2 x0 predictions, oldest first
        self._last_sample: torch.Tensor | None = None  # the (corrected) input of the previous step
        self._last_order = 0  # predictor order used at the previous step

    def step(self, velocity: torch.Tensor, step_index: int, sample: torch.Tensor) -> torch.Tensor:
        _check_same_shape(velocity=velocity, sample=sample)
        x0 = sample - self.sigmas[step_index] * velocity  # from the uncorrected sample
        return self.step_x0(x0, step_index, sample)

    def step_x0(self, x0: torch.Tensor, step_index: int, sample: torch.Tensor) -> torch.Tensor:
        """`step` for a caller that already has x0 = sample − σ_i·v (a host guider's output)."""
        if step_index != self._next_index:
            raise ValueError(
                f"FlowUniPC.step got step_index {step_index} but expected {self._next_index}: the solver is "
                f"multistep, so call steps 0..{self.num_steps - 1} in order (or reset() to start again)")
        _check_same_shape(x0=x0, sample=sample)
        i = step_index
        if i > 0:
            sample = self._correct(x0, sample, i)
        self._x0_history = (self._x0_history + [x0])[-SOLVER_ORDER:]
        order = min(SOLVER_ORDER, self.num_steps - i, i + 1)  # warm-up and lower-order final
        self._last_sample, self._last_order = sample, order
        self._next_index += 1
        if self.sigmas[i + 1] == 0:  # final step: the bh2 update reduces exactly to x0
            return x0.to(sample.dtype)
        return self._predict(sample, order, i).to(sample.dtype)

    def _predict(self, x: torch.Tensor, order: int, i: int) -> torch.Tensor:
        """UniP-bh2 from σ_i to σ_{i+1}; order 2 uses the fixed coefficient ρ = 1/2."""
        sig_s0, sig_t = self.sigmas[i], self.sigmas[i + 1]
        lam_s0 = _log_snr(sig_s0)
        h = _log_snr(sig_t) - lam_s0
        phi = torch.expm1(-h)  # h·φ1(−h) = B(h) for bh2
        alpha_t = 1 - sig_t
        m0 = self._x0_history[-1]
        x_t = sig_t / sig_s0 * x - alpha_t * phi * m0
        if order == 2:
            r1 = (_log_snr(self.sigmas[i - 1]) - lam_s0) / h
            d1 = (self._x0_history[-2] - m0) / r1
            x_t = x_t - alpha_t * phi * (0.5 * d1)
        return x_t

    def _correct(self, x0_now: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
        """UniC-bh2: redo the previous step σ_{i−1} → σ_i using the new x0 prediction as well."""
        order = self._last_order
        x_prev = self._last_sample
        sig_s0, sig_t = self.sigmas[i - 1], self.sigmas[i]
        lam_s0 = _log_snr(sig_s0)
        h = _log_snr(sig_t) - lam_s0
        phi = torch.expm1(-h)
        alpha_t = 1 - sig_t
        m0 = self._x0_history[-1]
        x_t = sig_t / sig_s0 * x_prev - alpha_t * phi * m0
        d1_t = x0_now - m0
        if order == 1:
            corr = 0.5 * d1_t
        else:
            r1 = (_log_snr(self.sigmas[i - 2]) - lam_s0) / h
            d1 = (self._x0_history[-2] - m0) / r1
            rho = self._corrector_rhos(h, r1)
            corr = rho[0] * d1 + rho[1] * d1_t
        return (x_t - alpha_t * phi * corr).to(sample.dtype)

    @staticmethod
    def _corrector_rhos(h: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
        """Solve [[1, 1], [r1, 1]]·ρ = b for the order-2 UniC coefficients (bh2, x0-prediction)."""
        hh = -h
        b_h = torch.expm1(hh)
        phi_2 = b_h / hh - 1  # h·φ2-type terms of the B(h) expansion
        phi_3 = phi_2 / hh - 0.5
        b = torch.stack([phi_2 / b_h, phi_3 * 2 / b_h])
        rks = torch.stack([r1, torch.ones_like(r1)])
        lhs = torch.stack([torch.ones_like(rks), rks])  # rows: rks**0, rks**1
        return torch.linalg.solve(lhs, b)
