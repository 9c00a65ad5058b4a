"""Shared layers: norms, GEGLU, axial RoPE, Fourier features, mapping network, parameter tags."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from genmodels.layers import (
    AdaRMSNorm,
    AxialRoPE,
    FeedForward,
    FourierFeatures,
    LinearGEGLU,
    MappingNetwork,
    RMSNorm,
    apply_rotary_emb,
    apply_wd,
    downscale_pos,
    make_axial_pos,
    make_param_groups,
    param_tags,
    rms_norm,
    tag_module,
    zero_init,
)

# Norms


def test_rms_norm_gives_unit_rms():
    x = torch.randn(4, 7, 32) * 5 + 2
    y = rms_norm(x, torch.ones(32))
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4, 7), atol=1e-4)


def test_rms_norm_computes_statistics_in_float32_for_bf16_input():
    x = torch.randn(8, 64) * 300  # squares overflow nothing in fp32, but lose digits in bf16
    y = rms_norm(x.bfloat16(), torch.ones(64))
    assert y.dtype == torch.bfloat16
    ref = rms_norm(x.bfloat16().float(), torch.ones(64))
    assert torch.allclose(y.float(), ref, rtol=1e-2, atol=1e-2)


def test_ada_rms_norm_at_init_is_plain_rms_norm():
    norm = AdaRMSNorm(16, 8)
    x, cond = torch.randn(3, 5, 6, 16), torch.randn(3, 8)
    assert torch.equal(norm.linear.weight, torch.zeros(16, 8))
    assert torch.allclose(norm(x, cond), rms_norm(x, torch.ones(16)), atol=1e-6)


def test_ada_rms_norm_scales_by_one_plus_projection_per_sample():
    norm = AdaRMSNorm(4, 2)
    with torch.no_grad():
        norm.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    x, cond = torch.randn(2, 3, 4), torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    scale = torch.tensor([[2.0, 3.0, 4.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    expected = rms_norm(x, torch.ones(4)) * scale[:, None, :]
    assert torch.allclose(norm(x, cond), expected, atol=1e-6)


def test_norms_have_no_bias_and_explain_themselves():
    assert "shape=(8,)" in repr(RMSNorm(8))
    assert "cond_features=3" in repr(AdaRMSNorm(8, 3))
    assert all("bias" not in n for n, _ in AdaRMSNorm(8, 3).named_parameters())


# GEGLU


def test_geglu_is_value_times_exact_gelu_of_gate():
    layer = LinearGEGLU(6, 5)
    x = torch.randn(3, 6)
    value, gate = (x @ layer.weight.T).chunk(2, dim=-1)
    exact = value * 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
    assert torch.allclose(layer(x), exact, atol=1e-6)
    assert not torch.allclose(layer(x), value * F.gelu(gate, approximate="tanh"), atol=1e-7)
    assert layer.bias is None


def test_feed_forward_defaults_to_three_times_width_and_starts_at_zero():
    ff = FeedForward(16)
    assert ff.up_proj.weight.shape == (2 * 48, 16)
    assert ff.down_proj.weight.shape == (16, 48)
    assert torch.equal(ff(torch.randn(2, 16)), torch.zeros(2, 16))


# Axial RoPE


def test_make_axial_pos_square_uses_pixel_centres_in_unit_box():
    pos = make_axial_pos(4, 4)
    assert pos.shape == (4, 4, 2)
    assert torch.allclose(pos[:, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(pos[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))


def test_make_axial_pos_rectangular_scales_short_side_by_aspect_ratio():
    pos = make_axial_pos(2, 4)  # wide: x spans [-1, 1], y spans [-0.5, 0.5]
    assert torch.allclose(pos[:, 0, 0], torch.tensor([-0.25, 0.25]))
    assert torch.allclose(pos[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    tall = make_axial_pos(4, 2)
    assert torch.allclose(tall[:, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(tall[0, :, 1], torch.tensor([-0.25, 0.25]))


def test_downscale_pos_averages_two_by_two_groups():
    pos = make_axial_pos(4, 8)
    assert torch.allclose(downscale_pos(pos), make_axial_pos(2, 4), atol=1e-6)
    assert torch.allclose(downscale_pos(pos)[0, 0], pos[:2, :2].reshape(4, 2).mean(0))


def test_rope_frequencies_are_log_spaced_pi_to_ten_pi_and_interleaved_across_heads():
    rope = AxialRoPE(d_head=32, n_heads=3)
    assert rope.freqs.shape == (3, 4)  # d_head / 8 per axis and head
    expected = torch.exp(torch.linspace(math.log(math.pi), math.log(10 * math.pi), 3 * 4 + 1)[:-1])
    for h in range(3):
        assert torch.allclose(rope.freqs[h], expected[h::3])
    theta = rope(torch.tensor([0.5, -0.25]))
    assert theta.shape == (3, 8)
    assert torch.allclose(theta[:, :4], 0.5 * rope.freqs) and torch.allclose(theta[:, 4:], -0.25 * rope.freqs)


def test_rope_rotates_first_half_of_head_and_preserves_norm():
    rope = AxialRoPE(d_head=16, n_heads=2)
    x = torch.randn(2, 2, 5, 16)
    theta = rope(make_axial_pos(1, 5)[0]).movedim(-2, 0)  # [heads, 5, 4]
    y = apply_rotary_emb(x, theta)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert not torch.allclose(y[..., :8], x[..., :8])
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(apply_rotary_emb(y, theta, conj=True), x, atol=1e-5)


def test_rope_dot_product_depends_only_on_position_offset():
    rope = AxialRoPE(d_head=32, n_heads=1)
    q, k = torch.randn(32), torch.randn(32)

    def score(p_q, p_k):
        tq, tk = rope(torch.tensor(p_q))[0], rope(torch.tensor(p_k))[0]
        return apply_rotary_emb(q, tq) @ apply_rotary_emb(k, tk)

    base = score([0.1, -0.3], [0.4, 0.2])
    shifted = score([0.1 + 0.37, -0.3 - 0.21], [0.4 + 0.37, 0.2 - 0.21])
    assert torch.allclose(base, shifted, atol=1e-5)
    assert not torch.allclose(base, score([0.1, -0.3], [0.5, 0.2]), atol=1e-3)


def test_rope_rejects_head_dims_not_divisible_by_eight():
    with pytest.raises(ValueError, match="divisible by 8"):
        AxialRoPE(d_head=12, n_heads=2)


# Embeddings


def test_fourier_features_are_cos_sin_of_a_saved_random_projection():
    ff = FourierFeatures(1, 8)
    x = torch.tensor([[0.3], [-1.2]])
    f = 2 * math.pi * x @ ff.freqs.T
    assert torch.allclose(ff(x), torch.cat([f.cos(), f.sin()], dim=-1))
    assert "freqs" in ff.state_dict()


def test_mapping_network_ends_normalised_and_blocks_start_as_identity():
    net = MappingNetwork(depth=2, width=16)
    x = torch.randn(5, 16) * 3
    y = net(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(5), atol=1e-4)
    assert torch.allclose(y, rms_norm(x, torch.ones(16)), atol=1e-5)  # zero-init blocks: norms only
    assert net.blocks[0].ff.up_proj.weight.shape == (2 * 48, 16)


# Parameter tags


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = apply_wd(nn.Linear(4, 4, bias=False))
        self.norm = RMSNorm(4)
        self.ada = AdaRMSNorm(4, 2)
        self.head = zero_init(nn.Linear(4, 2, bias=True))


def test_apply_wd_tags_only_weights_and_mapping_tag_covers_ada_norm():
    tags = param_tags(_Toy())
    assert tags["body.weight"] == {"wd"}
    assert tags["norm.scale"] == set()
    assert tags["ada.linear.weight"] == {"wd", "mapping"}
    assert tags["head.bias"] == set()


def test_tags_survive_parameter_replacement():
    model = _Toy()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)  # new Parameter objects, as accelerate's loading makes
    assert param_tags(model)["ada.linear.weight"] == {"wd", "mapping"}


def test_make_param_groups_scales_mapping_lr_and_decays_only_tagged_weights():
    model = _Toy()
    tag_module(model.norm, "mapping")
    groups = {g["name"]: g for g in make_param_groups(model, 3e-3, 0.1)}
    assert set(groups) == {"wd", "no_wd", "mapping_wd", "mapping_no_wd"}
    assert groups["mapping_wd"]["lr"] == pytest.approx(1e-3) and groups["mapping_wd"]["weight_decay"] == 0.1
    assert groups["mapping_no_wd"]["params"] == [model.norm.scale]
    assert groups["no_wd"]["weight_decay"] == 0.0 and groups["wd"]["lr"] == 3e-3
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
