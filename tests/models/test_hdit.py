"""HDiT: structure, initialisation, conditioning, grid checks, save/load, training and inpainting."""

from __future__ import annotations

import functools

import pytest
import torch

from genmodels.diffusion import KarrasDenoiser, sample_inpaint
from genmodels.hdit import (
    HDiT,
    NeighborhoodSelfAttentionBlock,
    SelfAttentionBlock,
    TokenSplit,
)
from genmodels.layers import AdaRMSNorm


def _tiny(**overrides) -> HDiT:
    return HDiT(**{**HDiT.tiny_config(), **overrides})


def _perturb(model: HDiT, std: float = 0.05) -> HDiT:
    """Move every zero-initialised weight off zero so the output depends on everything."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _x(batch=2, h=16, w=32):
    return torch.randn(batch, 2, h, w)


# Initialisation and structure


def test_output_is_exactly_zero_at_init():
    out = _tiny()(_x(), torch.tensor([0.3, 4.0]))
    assert out.shape == (2, 2, 16, 32)
    assert torch.equal(out, torch.zeros_like(out))


def test_no_parameter_is_a_bias():
    names = [n for n, _ in HDiT(**HDiT.pianoroll_config()).named_parameters()]
    assert not [n for n in names if "bias" in n]


def test_lerp_skips_start_at_one_half_and_attention_scales_at_ten():
    model = _tiny()
    splits = [m for m in model.modules() if isinstance(m, TokenSplit)]
    assert splits and all(torch.equal(s.fac, torch.tensor([0.5])) for s in splits)
    blocks = (SelfAttentionBlock, NeighborhoodSelfAttentionBlock)
    attns = [m for m in model.modules() if isinstance(m, blocks)]
    assert attns and all(torch.equal(a.scale, torch.full_like(a.scale, 10.0)) for a in attns)


def test_lerp_skip_blends_skip_and_upsampled_tokens():
    split = TokenSplit(8, 4)
    x, skip = torch.randn(1, 2, 3, 8), torch.randn(1, 4, 6, 4)
    up = split.proj(x).view(1, 2, 3, 2, 2, 4).permute(0, 1, 3, 2, 4, 5).reshape(1, 4, 6, 4)
    assert torch.allclose(split(x, skip), 0.5 * skip + 0.5 * up, atol=1e-6)


def test_levels_use_neighborhood_then_global_attention():
    model = _tiny()
    assert isinstance(model.down_levels[0][0].self_attn, NeighborhoodSelfAttentionBlock)
    assert isinstance(model.mid_level[0].self_attn, SelfAttentionBlock)
    assert len(model.up_levels) == len(model.down_levels) == 1


def test_param_groups_put_mapping_and_every_ada_norm_at_a_third_of_the_lr():
    model = _tiny(num_classes=3, mapping_cond_dim=5)
    groups = model.param_groups(base_lr=3e-4, weight_decay=0.01)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert len(by_param) == len(list(model.parameters()))
    for module in model.modules():
        if isinstance(module, AdaRMSNorm):
            g = by_param[id(module.linear.weight)]
            assert g["lr"] == pytest.approx(1e-4) and g["weight_decay"] == 0.01
    for p in model.mapping.parameters():
        assert by_param[id(p)]["lr"] == pytest.approx(1e-4)
    for name, p in model.named_parameters():
        if name.endswith(("scale", "fac")) or "class_emb" in name:
            assert by_param[id(p)]["weight_decay"] == 0.0, name
    assert by_param[id(model.down_levels[0][0].self_attn.qkv_proj.weight)]["lr"] == 3e-4


# Shapes and conditioning


@pytest.mark.parametrize("h, w", [(16, 32), (32, 16), (16, 16)])
def test_rectangular_inputs_keep_their_shape(h, w):
    model = _perturb(_tiny(out_channels=3))
    out = model(_x(2, h, w), torch.tensor([0.1, 10.0]))
    assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["softmax", "linear"])
def test_global_attention_runs_as_softmax_or_linear(kind):
    cfg = HDiT.tiny_config()
    cfg["self_attns"] = [cfg["self_attns"][0], {"type": "global", "d_head": 16, "kind": kind}]
    model = _perturb(HDiT(**cfg))
    x = _x()
    out = model(x, torch.tensor([0.5, 2.0]))
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    out.square().mean().backward()
    assert model.mid_level[0].self_attn.qkv_proj.weight.grad.abs().sum() > 0
    assert ("scale" in dict(model.mid_level[0].self_attn.named_parameters())) == (kind == "softmax")


def test_output_depends_on_sigma():
    model = _perturb(_tiny())
    x = _x(1)
    assert not torch.allclose(model(x, torch.tensor([0.1])), model(x, torch.tensor([5.0])))


def test_missing_class_label_is_the_null_class():
    model = _perturb(_tiny(num_classes=3))
    assert model.class_emb.num_embeddings == 4
    x, sigma = _x(), torch.tensor([1.0, 1.0])
    null = model(x, sigma, class_labels=torch.tensor([3, 3]))
    assert torch.equal(model(x, sigma), null)
    assert not torch.allclose(model(x, sigma, class_labels=torch.tensor([0, 1])), null)


def test_mapping_cond_is_projected_and_defaults_to_zeros():
    model = _perturb(_tiny(mapping_cond_dim=6))
    x, sigma = _x(), torch.tensor([1.0, 1.0])
    assert torch.equal(model(x, sigma), model(x, sigma, mapping_cond=torch.zeros(2, 6)))
    assert not torch.allclose(model(x, sigma, mapping_cond=torch.randn(2, 6)), model(x, sigma))
    with pytest.raises(ValueError, match="mapping_cond_dim=0"):
        _tiny()(x, sigma, mapping_cond=torch.zeros(2, 6))


# Grid validation


@pytest.mark.parametrize(
    "h, w, message",
    [
        (15, 32, "not divisible by patch size"),
        (18, 32, "2×2 merge cannot halve"),
        (4, 32, "smaller than its neighborhood kernel 3"),
    ],
)
def test_grid_validation_explains_the_problem(h, w, message):
    model = _tiny()
    with pytest.raises(ValueError, match=message):
        model(_x(1, h, w), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=message):
        _tiny(sample_size=[h, w])


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of d_head"):
        _tiny(widths=[24, 64])
    with pytest.raises(ValueError, match="positive odd"):
        _tiny(self_attns=[{"type": "neighborhood", "d_head": 16, "kernel_size": 4},
                          {"type": "global", "d_head": 16}])
    with pytest.raises(ValueError, match="'neighborhood' or 'global'"):
        _tiny(self_attns=[{"type": "swin", "d_head": 16}, {"type": "global", "d_head": 16}])


# Shipped configuration


def test_pianoroll_config_fits_a_two_by_64_by_128_roll():
    model = HDiT(**HDiT.pianoroll_config())
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n_params <= 4e6
    with torch.no_grad():
        out = _perturb(model)(torch.randn(1, 2, 64, 128), torch.tensor([1.0]))
    assert out.shape == (1, 2, 64, 128) and torch.isfinite(out).all()


# Save / load


def test_save_pretrained_round_trips_in_safetensors(tmp_path):
    model = _perturb(_tiny(num_classes=2)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = HDiT.from_pretrained(tmp_path).eval()
    x, sigma, labels = _x(), torch.tensor([0.2, 3.0]), torch.tensor([0, 2])
    assert torch.equal(loaded(x, sigma, class_labels=labels), model(x, sigma, class_labels=labels))
    assert torch.equal(loaded.time_emb.freqs, model.time_emb.freqs)  # the random Fourier projection
    assert [g["name"] for g in loaded.param_groups()] == [g["name"] for g in model.param_groups()]


# Training and sampling


def test_tiny_model_overfits_a_single_image():
    torch.manual_seed(0)
    model = _tiny()
    denoiser = KarrasDenoiser(model)
    x0 = torch.zeros(1, 2, 16, 32)
    x0[:, 0, 4:6, 3:20] = 1.0  # two "notes"
    x0[:, 1, 9:11, 10:28] = 0.8
    x0 = x0 * 2 - 1
    x0 = x0.expand(8, -1, -1, -1)
    # Mid-to-high noise, where the loss measures memorisation; at σ → 0 the target is the noise itself.
    sigma = torch.tensor([0.3, 0.45, 0.6, 0.8, 1.1, 1.5, 2.5, 4.0])
    noise = torch.randn(8, 2, 16, 32, generator=torch.Generator().manual_seed(1))

    def eval_loss():
        with torch.no_grad():
            return float(denoiser.loss(x0, noise, sigma).mean())

    before = eval_loss()
    opt = torch.optim.AdamW(model.param_groups(base_lr=5e-3, weight_decay=0.0), betas=(0.9, 0.95))
    for _ in range(100):
        loss = denoiser.loss(x0, torch.randn_like(x0), sigma).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < before / 5


def test_inpainting_with_the_model_keeps_known_pixels():
    denoiser = KarrasDenoiser(_perturb(_tiny(num_classes=2))).eval()
    x_known = torch.rand(1, 2, 16, 32) * 2 - 1
    mask = torch.zeros(1, 1, 16, 32)
    mask[..., :, 8:24] = 1
    with torch.no_grad():
        out = sample_inpaint(functools.partial(denoiser, class_labels=torch.tensor([1])), x_known, mask,
                             num_steps=3, repaint=2, generator=torch.Generator().manual_seed(0))
    assert out.nfe == 6
    assert torch.equal(out.sample[..., :8], x_known[..., :8])
    assert torch.equal(out.sample[..., 24:], x_known[..., 24:])
    assert torch.isfinite(out.sample).all()
