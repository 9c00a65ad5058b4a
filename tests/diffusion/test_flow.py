"""Rectified flow: path, time distribution and shift, objective, Euler / diffusers samplers, CFG, inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmodels.diffusion.flow import (
    FlowObjective,
    cfg_velocity,
    check_guidance_interval,
    default_shift,
    flow_interpolate,
    flow_target,
    flow_timesteps,
    logit_normal_timesteps,
    make_flow_scheduler,
    sample_flow_euler,
    sample_flow_img2img,
    sample_flow_inpaint,
    sample_flow_scheduler,
    set_flow_timesteps,
    shift_time,
)
from genmodels.sana import SanaDiT


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _point_mass(x0: torch.Tensor):
    """Exact velocity of a dataset holding the single sample x0: v = (x_t − x0) / t."""
    return lambda x, t: (x - x0) / t.view(-1, *[1] * (x.ndim - 1))


def _gaussian(mu: float, s: float):
    """Exact velocity E[ε − x0 | x_t] for data N(mu, s²); its flow maps noise ε to mu + s·ε."""

    def v(x, t):
        t = t.view(-1, *[1] * (x.ndim - 1)).double()
        var = (1 - t) ** 2 * s**2 + t**2
        r = x.double() - (1 - t) * mu
        return (t / var * r - (mu + (1 - t) * s**2 / var * r)).float()

    return v


# Path, time distribution, shift


def test_interpolation_runs_from_data_to_noise_with_constant_velocity():
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.0, 0.25, 1.0])
    xt = flow_interpolate(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * eps[1])
    dt = 1e-3
    finite_diff = (flow_interpolate(x0, eps, t + dt) - xt) / dt
    torch.testing.assert_close(finite_diff, flow_target(x0, eps), rtol=1e-2, atol=1e-2)


def test_shift_formula_fixes_the_ends_and_moves_toward_noise():
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(shift_time(t, 3.0), torch.tensor([0.0, 0.75, 1.0]))
    assert torch.equal(shift_time(t, 1.0), t)
    assert default_shift(64, 64) == 1.0 and default_shift(128, 128) == 2.0
    with pytest.raises(ValueError):
        shift_time(t, 0.0)


def test_logit_normal_times_lie_in_the_open_unit_interval_with_median_one_half():
    t = logit_normal_timesteps(20000, generator=_gen())
    assert t.dtype == torch.float32 and t.min() > 0 and t.max() < 1
    assert t.median().item() == pytest.approx(0.5, abs=0.02)
    assert logit_normal_timesteps(20000, shift=3.0, generator=_gen()).median().item() == pytest.approx(0.75, abs=0.02)


def test_sampling_grid_matches_diffusers_flow_match_euler():
    grid = flow_timesteps(10, shift=3.0)
    assert grid[0] == 1 and grid[-1] == 0 and torch.all(grid[1:] < grid[:-1])
    sigmas = set_flow_timesteps(make_flow_scheduler("euler", shift=3.0), 10)
    torch.testing.assert_close(sigmas, grid, rtol=1e-6, atol=1e-6)


# Objective


def test_objective_is_the_velocity_mse_of_a_perfect_model():
    x0 = torch.randn(4, 3, 8, 8)

    def oracle(xt, t, **_):  # knows x0, recovers ε from x_t
        t = t.view(-1, 1, 1, 1)
        eps = (xt - (1 - t) * x0) / t
        return eps - x0

    loss = FlowObjective()(oracle, {"pixel_values": x0}, _gen())
    assert loss.shape == (4,) and loss.max() < 1e-6
    zero = FlowObjective()(lambda xt, t, **_: torch.zeros_like(xt), {"pixel_values": x0}, _gen())
    assert zero.mean().item() == pytest.approx(1 + x0.square().mean().item(), rel=0.1)


def test_objective_drops_captions_with_the_batch_flag_or_its_probability():
    seen = {}

    def spy(xt, t, **kwargs):
        seen.update(kwargs)
        return torch.zeros_like(xt)

    batch = {"pixel_values": torch.randn(1000, 1, 1, 1), "encoder_hidden_states": torch.randn(1000, 2, 4),
             "encoder_attention_mask": torch.ones(1000, 2, dtype=torch.bool)}
    FlowObjective(text_drop_prob=0.1)(spy, batch, _gen())
    assert seen["drop_text"].dtype == torch.bool and 0.07 < seen["drop_text"].float().mean() < 0.13
    drop = torch.zeros(1000, dtype=torch.bool)
    FlowObjective(text_drop_prob=0.5)(spy, {**batch, "drop": drop}, _gen())
    assert torch.equal(seen["drop_text"], drop) and "pooled_text" not in seen


# Samplers


def test_euler_on_a_point_mass_reaches_the_point():
    x0 = torch.randn(2, 3, 4, 4)
    out = sample_flow_euler(_point_mass(x0), torch.randn(2, 3, 4, 4), 8, shift=2.0)
    assert out.nfe == 8
    torch.testing.assert_close(out.sample, x0, rtol=0, atol=1e-5)


def test_euler_draws_its_own_noise_from_the_generator():
    a = sample_flow_euler(_point_mass(torch.zeros(1)), (2, 3), 4, generator=_gen(1))
    b = sample_flow_euler(lambda x, t: torch.zeros_like(x), (2, 3), 4, generator=_gen(1))
    assert torch.equal(b.sample, torch.randn(2, 3, generator=_gen(1))) and a.sample.abs().max() < 1e-5


def test_diffusers_euler_equals_the_hand_written_sampler():
    eps = torch.randn(64, 4)
    ours = sample_flow_euler(_gaussian(0.5, 0.3), eps, 12, shift=3.0).sample
    theirs = sample_flow_scheduler(_gaussian(0.5, 0.3), eps, 12, scheduler="euler", shift=3.0).sample
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_samplers_converge_to_the_exact_gaussian_flow_map():
    eps = torch.randn(4096, 1, generator=_gen())
    exact = 0.5 + 0.3 * eps
    errors = {}
    for name, run in (("euler", lambda n: sample_flow_euler(_gaussian(0.5, 0.3), eps, n)),
                      ("dpm", lambda n: sample_flow_scheduler(_gaussian(0.5, 0.3), eps, n, scheduler="dpmsolver++"))):
        errors[name] = [(run(n).sample - exact).abs().mean().item() for n in (10, 40)]
    assert errors["euler"][1] < errors["euler"][0] / 3  # first order
    assert errors["dpm"][1] < errors["dpm"][0] and errors["dpm"][0] < errors["euler"][0] / 3  # 2nd order, better
    assert errors["dpm"][1] < 5e-3


def test_img2img_at_full_strength_is_plain_sampling_from_the_same_noise():
    x_init = torch.randn(3, 2, 4)
    ours = sample_flow_img2img(_gaussian(0.5, 0.3), x_init, 1.0, 10, shift=2.0, generator=_gen(4))
    plain = sample_flow_euler(_gaussian(0.5, 0.3), (3, 2, 4), 10, shift=2.0, generator=_gen(4))
    assert ours.nfe == 10 and torch.equal(ours.sample, plain.sample)


def test_img2img_runs_strength_times_steps_and_keeps_more_of_the_input_at_low_strength():
    """On data N(0.5, 0.3²) with its exact velocity, SDEdit from any t₀ returns samples of the data (the ODE
    carries the t₀ marginal back); the output stays the closer to its input, the lower t₀."""
    x_init = 0.5 + 0.3 * torch.randn(4096, 1, generator=_gen(1))
    corr = {}
    for strength, nfe in ((0.3, 12), (0.9, 36)):
        out = sample_flow_img2img(_gaussian(0.5, 0.3), x_init, strength, 40, generator=_gen(2))
        assert out.nfe == nfe
        assert abs(out.sample.mean().item() - 0.5) < 0.02 and abs(out.sample.std().item() - 0.3) < 0.02
        corr[strength] = torch.corrcoef(torch.cat([x_init, out.sample], 1).T)[0, 1].item()
    assert corr[0.3] > 0.5 and corr[0.9] < 0.2, corr


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan")])
def test_img2img_rejects_a_strength_outside_the_unit_interval(strength):
    with pytest.raises(ValueError, match="strength"):
        sample_flow_img2img(_gaussian(0.5, 0.3), torch.zeros(1, 2), strength, 10)


def test_cfg_with_scale_one_is_the_conditional_velocity_in_one_call():
    model = SanaDiT(**SanaDiT.tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tokens, pooled = torch.randn(2, 4, 32), torch.randn(2, 32)
    null = model.apply_text_dropout(tokens, None, pooled, torch.ones(2, dtype=torch.bool))
    both = model.cross_attention_states(torch.cat([null[0], tokens]),
                                        torch.cat([null[1], torch.ones(2, 4, dtype=torch.bool)]))
    pooled2 = torch.cat([null[2], pooled])
    calls = []

    def velocity(x, t):
        calls.append(x.shape[0])
        return model(x, t, pooled_text=pooled2, context_states=both)

    x, t = torch.randn(2, 3, 32, 32), torch.rand(2)
    guided = cfg_velocity(velocity, 1.0)(x, t)
    assert calls == [4]
    torch.testing.assert_close(guided, model(x, t, tokens, None, pooled), rtol=1e-5, atol=1e-5)
    v_u, v_c = velocity(x.repeat(2, 1, 1, 1), t.repeat(2)).chunk(2)
    torch.testing.assert_close(cfg_velocity(velocity, 3.0)(x, t), v_u + 3 * (v_c - v_u))


@pytest.mark.parametrize("scheduler", [None, "dpmsolver++"])
def test_inpainting_keeps_the_known_region_bit_exactly(scheduler):
    known = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 3:7] = 1
    target = torch.full_like(known, 0.25)
    out = sample_flow_inpaint(_point_mass(target), known, mask, 6, scheduler=scheduler, generator=_gen())
    keep = (mask == 0).expand_as(known)
    assert torch.equal(out.sample[keep], known[keep])
    torch.testing.assert_close(out.sample[~keep], target[~keep], rtol=0, atol=1e-4)


def test_inpainting_sees_the_known_region_on_its_noisy_path():
    known = torch.ones(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    inputs = []

    def spy(x, t):
        inputs.append((x.clone(), float(t[0])))
        return torch.zeros_like(x)

    out = sample_flow_inpaint(spy, known, mask, 4, fresh_noise=False, generator=_gen(3))
    eps = torch.randn(1, 1, 2, 2, generator=_gen(3))
    for x, t in inputs:
        torch.testing.assert_close(x[0, 0, 1], (1 - t) * known[0, 0, 1] + t * eps[0, 0, 1])
    assert out.nfe == 4


def test_bad_inpainting_mask_raises():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        sample_flow_inpaint(_point_mass(torch.zeros(1)), torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0), 2)


def _toy_cfg_parts():
    """A doubled-batch velocity fn (null half: −x, text half: x + 1) that records its batch sizes."""
    calls = []

    def doubled(x, t):
        calls.append(x.shape[0])
        v_u, v_c = -x[: len(x) // 2], x[len(x) // 2:] + 1
        return torch.cat([v_u, v_c])

    return doubled, calls


def test_guidance_interval_guides_inside_and_uses_the_text_alone_outside():
    doubled, calls = _toy_cfg_parts()
    cond_calls = []

    def conditional(x, t):
        cond_calls.append(x.shape[0])
        return x + 1

    fn = cfg_velocity(doubled, 3.0, interval=(0.2, 0.7), conditional_fn=conditional)
    x = torch.randn(3, 2)
    inside = fn(x, torch.full((3,), 0.5))
    torch.testing.assert_close(inside, -x + 3 * ((x + 1) - (-x)))
    assert calls == [6] and cond_calls == []
    for t in (0.7 + 1e-3, 0.2, 0.95):  # t_hi is inside, t_lo is not
        torch.testing.assert_close(fn(x, torch.full((3,), t)), x + 1)
    assert calls == [6] and cond_calls == [3, 3, 3]
    torch.testing.assert_close(fn(x, torch.full((3,), 0.7)), inside)


def test_guidance_interval_without_a_conditional_fn_and_with_mixed_times():
    doubled, calls = _toy_cfg_parts()
    fn = cfg_velocity(doubled, 3.0, interval=(0.2, 0.7))
    x = torch.randn(3, 2)
    out = fn(x, torch.tensor([0.5, 0.9, 0.1]))
    torch.testing.assert_close(out[0], -x[0] + 3 * (2 * x[0] + 1))
    torch.testing.assert_close(out[1:], x[1:] + 1)
    assert calls == [6]


@pytest.mark.parametrize("interval", [(0.5, 0.5), (0.7, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.1, float("nan")),
                                      (0.5,), "ab", 3])
def test_bad_guidance_intervals_are_refused(interval):
    with pytest.raises(ValueError, match="guidance_interval"):
        check_guidance_interval(interval)
    with pytest.raises(ValueError, match="guidance_interval"):
        cfg_velocity(lambda x, t: x, 2.0, interval=interval)


def test_a_good_guidance_interval_is_returned_as_floats():
    assert check_guidance_interval(None) is None
    assert check_guidance_interval([0, 1]) == (0.0, 1.0)
    assert check_guidance_interval(np.array([0.25, 0.75], np.float32)) == (0.25, 0.75)
