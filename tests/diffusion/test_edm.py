"""EDM preconditioning, loss weightings and training σ distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genmodels.diffusion import (
    KarrasDenoiser,
    SigmaSampler,
    cosine_interpolated_sigma,
    karras_scalings,
    loss_weighting,
    noise_conditioning,
    stratified_uniform,
)


class _Recorder(nn.Module):
    """Returns a fixed tensor and records what it was called with."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out
        self.calls = []

    def forward(self, x, sigma, **cond):
        self.calls.append((x.clone(), sigma.clone(), cond))
        return self.out


# Preconditioning


@pytest.mark.parametrize(
    "sigma, c_skip, c_out, c_in",
    [
        (0.5, 0.5, 0.25 / math.sqrt(0.5), 1 / math.sqrt(0.5)),
        (1.0, 0.2, 0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25)),
        (80.0, 0.25 / 6400.25, 40 / math.sqrt(6400.25), 1 / math.sqrt(6400.25)),
    ],
)
def test_karras_scalings_match_hand_values(sigma, c_skip, c_out, c_in):
    got = karras_scalings(torch.tensor(sigma, dtype=torch.float64), 0.5)
    assert [float(g) for g in got] == pytest.approx([c_skip, c_out, c_in], rel=1e-12)


def test_noise_conditioning_is_quarter_log_sigma():
    assert float(noise_conditioning(torch.tensor(math.e**2))) == pytest.approx(0.5)


def test_denoise_feeds_c_in_x_and_sigma_and_combines_with_skip():
    x, f = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    net = _Recorder(f)
    sigma = torch.tensor([0.5, 1.0])
    d = KarrasDenoiser(net).denoise(x, sigma, class_labels="c")
    c_skip, c_out, c_in = (c.view(2, 1, 1, 1) for c in karras_scalings(sigma))
    (x_in, s_in, cond), = net.calls
    assert torch.allclose(x_in, x * c_in) and torch.equal(s_in, sigma) and cond == {"class_labels": "c"}
    assert torch.allclose(d, c_skip * x + c_out * f)


def test_scalar_sigma_is_broadcast_to_the_batch():
    net = _Recorder(torch.zeros(3, 2))
    KarrasDenoiser(net).denoise(torch.ones(3, 2), 2.0)
    assert torch.equal(net.calls[0][1], torch.full((3,), 2.0))


# Loss


def test_soft_min_snr_weight_is_sigma_sigma_data_squared_over_variance_squared():
    sigma = torch.tensor([0.01, 0.5, 2.0, 80.0], dtype=torch.float64)
    expected = (sigma * 0.5) ** 2 / (sigma**2 + 0.25) ** 2
    assert torch.allclose(loss_weighting(sigma, "soft-min-snr"), expected)
    # in x0 space it is 1 / (σ² + σd²): the preconditioned weight divided by c_out²
    c_out = karras_scalings(sigma)[1]
    assert torch.allclose(loss_weighting(sigma) / c_out**2, 1 / (sigma**2 + 0.25))


def test_other_weightings():
    sigma = torch.tensor([0.1, 3.0])
    assert torch.equal(loss_weighting(sigma, "karras"), torch.ones(2))
    assert torch.allclose(loss_weighting(sigma, "snr"), 0.25 / (sigma**2 + 0.25))
    with pytest.raises(ValueError, match="unknown loss weighting"):
        KarrasDenoiser(nn.Identity(), weighting="min-snr")


@pytest.mark.parametrize("weighting", ["soft-min-snr", "karras", "snr"])
def test_loss_is_weighted_mse_against_preconditioned_target(weighting):
    x0, noise, f = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.05, 0.7, 12.0])
    loss = KarrasDenoiser(_Recorder(f), weighting=weighting).loss(x0, noise, sigma)
    c_skip, c_out, _ = (c.view(3, 1, 1, 1) for c in karras_scalings(sigma))
    noised = x0 + noise * sigma.view(3, 1, 1, 1)
    target = (x0 - c_skip * noised) / c_out
    expected = (f - target).pow(2).mean(dim=(1, 2, 3)) * loss_weighting(sigma, weighting)
    assert loss.shape == (3,)
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_loss_vanishes_when_the_network_predicts_the_target():
    x0, noise, sigma = torch.randn(2, 8), torch.randn(2, 8), torch.tensor([0.3, 5.0])
    c_skip, c_out, _ = (c[:, None] for c in karras_scalings(sigma))
    target = (x0 - c_skip * (x0 + noise * sigma[:, None])) / c_out
    loss = KarrasDenoiser(_Recorder(target)).loss(x0, noise, sigma)
    assert torch.allclose(loss, torch.zeros(2), atol=1e-10)


# σ distributions


def _cosine_interpolated_by_hand(u, image_d, noise_d_low, noise_d_high, sd=0.5, smin=1e-2, smax=80.0):
    """simple diffusion's interpolated shifted cosine schedule, written out in plain floats."""

    def logsnr_cosine(t, logsnr_min, logsnr_max):
        t_min = math.atan(math.exp(-0.5 * logsnr_max))
        t_max = math.atan(math.exp(-0.5 * logsnr_min))
        return -2 * math.log(math.tan(t_min + t * (t_max - t_min)))

    def shifted(t, noise_d):
        shift = 2 * math.log(noise_d / image_d)
        return logsnr_cosine(t, -2 * math.log(smin / sd) - shift, -2 * math.log(smax / sd) - shift) + shift

    logsnr = (1 - u) * shifted(u, noise_d_low) + u * shifted(u, noise_d_high)
    return sd * math.exp(-logsnr / 2)


@pytest.mark.parametrize("u", [0.1, 0.5, 0.83])
def test_cosine_interpolated_matches_hand_computation(u):
    got = cosine_interpolated_sigma(torch.tensor([u], dtype=torch.float64), image_d=128, noise_d_low=32)
    assert float(got) == pytest.approx(_cosine_interpolated_by_hand(u, 128, 32, 128), rel=1e-9)


def test_cosine_interpolated_endpoints_are_sigma_max_and_sigma_min():
    got = cosine_interpolated_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64), image_d=64)
    assert got.tolist() == pytest.approx([80.0, 1e-2], rel=1e-9)


def test_cosine_interpolated_without_shift_is_the_plain_cosine_schedule():
    # noise_d = image_d: no shift, σ = σd·tan(t_min + u·(t_max − t_min)), a linear map in angle
    u = torch.tensor([0.25], dtype=torch.float64)
    got = cosine_interpolated_sigma(u, image_d=32, noise_d_low=32, noise_d_high=32)
    a_max, a_min = math.atan(80 / 0.5), math.atan(1e-2 / 0.5)
    assert float(got) == pytest.approx(0.5 * math.tan(a_max + 0.25 * (a_min - a_max)), rel=1e-9)


def test_stratified_uniform_puts_one_sample_in_each_stratum():
    u = stratified_uniform(16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.floor(u * 16), torch.arange(16, dtype=torch.float32))


def test_cosine_interpolated_sampler_stays_in_bounds_with_median_at_u_half():
    sampler = SigmaSampler(image_d=128)
    sigma = sampler(4096, generator=torch.Generator().manual_seed(0))
    assert sigma.min() >= 1e-2 and sigma.max() <= 80.0
    median = _cosine_interpolated_by_hand(0.5, 128, 32, 128)
    assert 0.7 < median < 1.5  # σ ≈ 1 for a 128-pixel image: mid-noise, above σ_data
    assert float(sigma.median()) == pytest.approx(median, rel=0.02)
    assert abs(torch.corrcoef(torch.stack([sigma, torch.arange(4096.0)]))[0, 1]) < 0.1  # shuffled


def test_sigma_sampler_is_reproducible_from_a_generator():
    sampler = SigmaSampler(image_d=64)
    a = sampler(8, generator=torch.Generator().manual_seed(1))
    b = sampler(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler(8, generator=torch.Generator().manual_seed(2)))


def test_log_normal_sampler_is_clamped_with_median_exp_loc():
    sampler = SigmaSampler(kind="log-normal", loc=-1.2, scale=1.2, sigma_min=0.02, sigma_max=20.0)
    sigma = sampler(20000, generator=torch.Generator().manual_seed(0))
    assert sigma.min() >= 0.02 and sigma.max() <= 20.0
    assert float(sigma.median()) == pytest.approx(math.exp(-1.2), rel=0.05)


def test_sigma_sampler_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown sigma distribution"):
        SigmaSampler(kind="uniform")
