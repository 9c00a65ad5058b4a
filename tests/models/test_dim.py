"""Diffusion Mamba: scan orders, the bidirectional SSM against a step-by-step reference, the model's contract."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from genmodels.diffusion.flow import FlowObjective
from genmodels.dim import BidirectionalSSM, DiffusionMamba, scan_orders, snake_order, zigzag_orders_2d


def _tiny(**overrides) -> DiffusionMamba:
    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.tiny_config(), **overrides})
    with torch.no_grad():  # leave adaLN-Zero's identity start: a non-trivial function
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# Scan orders


def _coords(order: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    return torch.stack([order // (h * w), (order // w) % h, order % w], dim=1)


@pytest.mark.parametrize("h, w", [(4, 4), (3, 5), (6, 2)])
def test_zigzag_paths_are_continuous_bijections(h, w):
    orders = zigzag_orders_2d(h, w)
    assert len(orders) == 8 and len({tuple(o.tolist()) for o in orders}) == 8
    for order in orders:
        assert sorted(order.tolist()) == list(range(h * w))
        yx = torch.stack([order // w, order % w], dim=1)
        steps = (yx[1:] - yx[:-1]).abs().sum(1)
        assert (steps == 1).all()  # every step goes to a grid neighbour


def test_snake_corners_start_where_named():
    assert snake_order(3, 4, corner=0)[0] == 0 and snake_order(3, 4, corner=1)[0] == 3
    assert snake_order(3, 4, corner=2)[0] == 8 and snake_order(3, 4, corner=3)[0] == 11
    assert snake_order(3, 4, columns=True)[:4].tolist() == [0, 4, 8, 9]


@pytest.mark.parametrize("frames, scan, n_orders", [(1, "zigzag", 8), (5, "zigzag", 12), (5, "raster", 1)])
def test_video_orders_cycle_spatial_and_temporal_scans(frames, scan, n_orders):
    h, w = 3, 4
    orders = scan_orders(frames, h, w, scan)
    assert len(orders) == n_orders
    for i, (order, inverse) in enumerate(orders):
        assert torch.equal(inverse[order], torch.arange(frames * h * w))
        assert torch.equal(order[inverse], torch.arange(frames * h * w))
        if scan == "raster" or frames == 1:
            continue
        c = _coords(order, frames, h, w)
        steps = (c[1:] - c[:-1]).abs()
        if i % 3 == 2:  # temporal: through all frames at one position, then one grid step to the next position
            assert (steps[:, 0] == 1).sum() == (frames - 1) * h * w
            assert (steps.sum(1) == 1).all()
        else:  # spatial: a snake inside a frame, frames in order
            assert (c[:, 0].diff() >= 0).all()
            within = c[1:, 0] == c[:-1, 0]
            assert (steps[within].sum(1) == 1).all()


def test_unknown_scan_is_refused():
    with pytest.raises(ValueError, match="scan must be one of"):
        scan_orders(2, 2, 2, "hilbert")
    with pytest.raises(ValueError, match="scan must be one of"):
        DiffusionMamba(**{**DiffusionMamba.tiny_config(), "scan": "spiral"})


# The bidirectional SSM against a step-by-step selective scan


def _reference_ssm(mixer: BidirectionalSSM, x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Mamba's selective_scan_ref semantics in its SSD form, one token at a time, float64."""
    mixer = mixer.double()
    x = x.double()
    xs, z = mixer.in_proj(x).chunk(2, dim=-1)
    xs = xs[:, order]
    b, n, e = xs.shape
    heads, p, s = mixer.n_heads, mixer.head_dim, mixer.d_state
    outs = []
    for d, seq in enumerate((xs, xs.flip(1))):
        w = mixer.conv.weight[d * e:(d + 1) * e]  # [E, 1, K]
        u = F.silu(F.conv1d(F.pad(seq.transpose(1, 2), (mixer.d_conv - 1, 0)), w,
                            mixer.conv.bias[d * e:(d + 1) * e], groups=e)).transpose(1, 2)
        dt_raw, bm, cm = mixer.x_proj[d](u).split([heads, s, s], dim=-1)
        dt = F.softplus(dt_raw + mixer.dt_bias[d])
        a = -torch.exp(mixer.A_log[d])
        state = torch.zeros(b, heads, s, p, dtype=torch.float64)
        ys = []
        for t in range(n):
            u_t = u[:, t].reshape(b, heads, p)
            state = torch.exp(dt[:, t] * a)[..., None, None] * state \
                + bm[:, t, None, :, None] * (dt[:, t, :, None] * u_t)[:, :, None, :]
            y_t = torch.einsum("bs,bhsp->bhp", cm[:, t], state) + mixer.D[d][None, :, None] * u_t
            ys.append(y_t.reshape(b, e))
        y = torch.stack(ys, dim=1)
        outs.append(y if d == 0 else y.flip(1))
    y = 0.5 * (outs[0] + outs[1])
    y = y[:, torch.argsort(order)]
    return mixer.out_proj(mixer.norm(y * F.silu(z)))


@pytest.mark.parametrize("chunk", [None, 16, 7, 1])
def test_bidirectional_ssm_matches_the_sequential_scan_forward_and_backward(chunk):
    """Also when the sequence runs in pieces (state and conv inputs carried; 7 and 1 are shorter than the
    conv's reach, 16 leaves a ragged last piece)."""
    torch.manual_seed(0)
    mixer = BidirectionalSSM(dim=16, expand=2, head_dim=8, d_state=4, d_conv=3)
    with torch.no_grad():
        mixer.conv.weight.normal_(0, 0.5)
        mixer.conv.bias.normal_(0, 0.1)
    x = torch.randn(2, 70, 16)  # not a multiple of the chunk: the padded tail must not leak
    order = torch.randperm(70)
    x_fast = x.clone().requires_grad_(True)
    out = mixer(x_fast, order, torch.argsort(order), chunk=chunk)
    x_ref = x.double().clone().requires_grad_(True)
    ref = _reference_ssm(copy.deepcopy(mixer), x_ref, order)
    assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-4), (out.double() - ref).abs().max()
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    err = (x_fast.grad.double() - x_ref.grad).norm() / x_ref.grad.norm()
    assert err < 1e-4, err


@pytest.mark.parametrize("cross_attn", ["crosswkv", "joint"])
def test_running_in_pieces_changes_nothing(monkeypatch, cross_attn):
    """The whole model (mixer, CrossWKV read, MLP) with the token pieces far smaller than the clip: the same
    output and gradients as one piece."""
    import genmodels.dim as dim_module

    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.tiny_config(), "cross_attn": cross_attn})
    for p in model.parameters():  # away from the zero init, so every path carries signal
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 3, 16, 16), torch.rand(2)
    text = torch.randn(2, 5, model.config.text_dim)
    results = []
    for chunk in (dim_module.TOKEN_CHUNK, 10):
        monkeypatch.setattr(dim_module, "TOKEN_CHUNK", chunk)
        model.zero_grad()
        out = model(x, t, text)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
    assert len(ga) == len(gb) > 50  # every trained path (the null text and pooled-text layers get none here)
    worst = max(float((u - v).norm() / u.norm().clamp_min(1e-12)) for u, v in zip(ga, gb))
    assert worst < 1e-5, worst


def test_mixer_sees_both_directions():
    torch.manual_seed(0)
    mixer = BidirectionalSSM(dim=16, expand=2, head_dim=8, d_state=4)
    x = torch.randn(1, 40, 16)
    x2 = x.clone()
    x2[:, -1] += 1.0
    x3 = x.clone()
    x3[:, 0] += 1.0
    base = mixer(x)
    assert (mixer(x2)[:, 0] - base[:, 0]).abs().max() > 1e-6  # the first token hears the last (backward scan)
    assert (mixer(x3)[:, -1] - base[:, -1]).abs().max() > 1e-6  # and the last the first (forward scan)


# The model


def test_shapes_for_clips_and_images_and_zero_init_output():
    model = DiffusionMamba(**DiffusionMamba.tiny_config())
    x = torch.randn(2, 3, 4, 16, 16)
    out = model(x, torch.tensor([0.3, 0.9]), torch.randn(2, 5, 32))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # adaLN-Zero + zero final layer
    image_model = _tiny(num_frames=1, frame_conditioning=False)
    img = torch.randn(2, 3, 16, 16)
    assert image_model(img, 0.5).shape == img.shape


def test_one_frame_clip_equals_the_image_path():
    model = _tiny(frame_conditioning=False)
    img = torch.randn(2, 3, 16, 16)
    text = torch.randn(2, 5, 32)
    assert torch.allclose(model(img, 0.4, text), model(img[:, :, None], 0.4, text)[:, :, 0])


def test_tokens_mix_across_frames_and_space():
    model = _tiny()
    with torch.no_grad():  # slow decays, so the far end of the clip is heard above float32 noise
        for block in model.blocks:
            block.mixer.A_log.fill_(math.log(0.05))
    x = torch.randn(1, 3, 4, 16, 16)
    x2 = x.clone()
    x2[:, :, -1, -4:, -4:] += 1.0  # last patch of the last frame
    diff = (model(x2, 0.5) - model(x, 0.5)).abs()
    assert diff[:, :, 0, :4, :4].max() > 1e-6  # reaches the first patch of the first frame


def test_frame_mask_changes_the_prediction_and_is_checked():
    model = _tiny()
    x = torch.randn(2, 3, 4, 16, 16)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    assert not torch.allclose(model(x, 0.5, frame_mask=mask), model(x, 0.5))
    with pytest.raises(ValueError, match="frame_mask must be"):
        model(x, 0.5, frame_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="frame_conditioning=False"):
        _tiny(frame_conditioning=False)(x, 0.5, frame_mask=mask)


@pytest.mark.parametrize("bad, match", [
    (torch.randn(2, 3, 16), "must be"),
    (torch.randn(1, 4, 2, 16, 16), "channels"),
    (torch.randn(1, 3, 2, 18, 16), "multiples of patch_size"),
])
def test_bad_inputs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        _tiny()(bad, 0.5)


def test_save_and_load_round_trip(tmp_path):
    model = _tiny(scan="raster")
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = DiffusionMamba.from_pretrained(tmp_path, use_safetensors=True)
    assert loaded.config.scan == "raster"
    x = torch.randn(1, 3, 4, 16, 16)
    text = torch.randn(1, 3, 32)
    assert torch.allclose(model(x, 0.5, text), loaded(x, 0.5, text), atol=1e-6)  # same weights; layouts may differ


def test_pooled_mlp_option_round_trips_and_reads_the_pooled_text(tmp_path):
    from genmodels.layers.dit import PooledTextEmbedder

    model = _tiny(pooled_mlp=True)
    assert isinstance(model.pooled_embedder, PooledTextEmbedder)
    x, text = torch.randn(2, 3, 4, 16, 16), torch.randn(2, 3, 32)
    pooled = F.normalize(torch.randn(2, 32), dim=-1)
    assert not torch.allclose(model(x, 0.5, text, pooled_text=pooled), model(x, 0.5, text, pooled_text=-pooled),
                              atol=1e-4)
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = DiffusionMamba.from_pretrained(tmp_path, use_safetensors=True)
    assert loaded.config.pooled_mlp
    assert torch.allclose(model(x, 0.5, text, pooled_text=pooled), loaded(x, 0.5, text, pooled_text=pooled), atol=1e-6)


def test_crosswkv_states_match_the_per_step_text_path():
    model = _tiny()
    x, text = torch.randn(2, 3, 4, 16, 16), torch.randn(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    states = model.cross_attention_states(text, mask)
    assert torch.allclose(model(x, 0.7, text, mask), model(x, 0.7, context_states=states), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _tiny()
    x = torch.randn(2, 3, 4, 16, 16)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x, 0.5, torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_ssm_parameters_are_excluded_from_weight_decay():
    model = _tiny()
    mixer = model.blocks[0].mixer
    groups = model.param_groups(1e-3, weight_decay=0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(mixer.in_proj.weight) in decayed
    assert not {id(mixer.A_log), id(mixer.D), id(mixer.dt_bias)} & decayed


# Training with given frames (frame continuation)


class _Recorder(torch.nn.Module):
    """Wraps a model and records what it was called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, **kwargs):
        self.calls.append((x.detach().clone(), kwargs.get("frame_mask")))
        return self.model(x, t, **kwargs)


def test_given_frames_enter_clean_and_carry_no_loss():
    torch.manual_seed(0)
    model = _Recorder(_tiny())
    objective = FlowObjective(given_frames_prob=1.0, text_drop_prob=0.0)
    x0 = torch.rand(4, 3, 4, 16, 16) * 2 - 1
    loss = objective(model, {"pixel_values": x0}, torch.Generator().manual_seed(0))
    x_in, given = model.calls[0]
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    k = given.sum(1)
    assert ((k >= 1) & (k <= 3)).all()
    for i in range(4):  # a prefix, clean
        assert given[i, : k[i]].all() and not given[i, k[i]:].any()
        assert torch.equal(x_in[i, :, : k[i]], x0[i, :, : k[i]])
        assert not torch.allclose(x_in[i, :, k[i]:], x0[i, :, k[i]:])


def test_one_frame_share_sets_how_many_prefixes_are_the_first_frame_only():
    def prefix_counts(share: float, prob: float = 0.5) -> torch.Tensor:
        objective = FlowObjective(given_frames_prob=prob, one_frame_share=share)
        k = objective._given_frames(8000, 8, torch.Generator().manual_seed(0), "cpu").sum(1)
        return torch.bincount(k, minlength=8)

    before, half, only = prefix_counts(0.0), prefix_counts(0.5), prefix_counts(1.0)
    assert torch.equal(before[0], half[0]) and torch.equal(before[0], only[0])  # same items get no prefix
    assert abs(before[0].item() / 8000 - 0.5) < 0.03
    given = 8000 - before[0].item()
    assert abs(before[1].item() / given - 1 / 7) < 0.03  # k uniform in 1..7
    assert abs(half[1].item() / given - (0.5 + 0.5 / 7)) < 0.03  # half k = 1, the rest uniform in 1..7
    assert (half[2:] > 0).all() and abs(half[7].item() / given - 0.5 / 7) < 0.02
    assert only[1].item() == given and only[2:].sum() == 0


def test_loss_ignores_the_prediction_on_given_frames():
    class Fixed(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x, t, frame_mask=None, **kwargs):
            out = torch.zeros_like(x)
            out[frame_mask[:, None, :, None, None].expand_as(x)] = self.value
            return out

    objective = FlowObjective(given_frames_prob=1.0, text_drop_prob=0.0)
    x0 = torch.rand(3, 3, 4, 8, 8)
    a = objective(Fixed(0.0), {"pixel_values": x0}, torch.Generator().manual_seed(0))
    b = objective(Fixed(100.0), {"pixel_values": x0}, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_without_given_frames_the_objective_is_unchanged():
    x0 = torch.rand(2, 3, 4, 8, 8)
    model = _tiny()
    a = FlowObjective(text_drop_prob=0.0)(model, {"pixel_values": x0}, torch.Generator().manual_seed(3))
    b = FlowObjective(given_frames_prob=0.0, text_drop_prob=0.0)(model, {"pixel_values": x0},
                                                                 torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_a_few_steps_of_training_reduce_the_loss():
    torch.manual_seed(0)
    model = DiffusionMamba(**DiffusionMamba.tiny_config())
    objective = FlowObjective(given_frames_prob=0.5, text_drop_prob=0.0, shift=1.0)
    x0 = torch.zeros(8, 3, 4, 16, 16)
    x0[:, 0, :, 4:8] = 1.0  # a bar: a learnable clip
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = objective(model, {"pixel_values": x0}, torch.Generator().manual_seed(step)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_softmax_baseline_is_the_same_dit_with_attention():
    ssm = _tiny()
    attn = _tiny(mixer="softmax")
    assert type(attn.blocks[0].mixer).__name__ == "SoftmaxMixer"
    ssm_keys = {k for k in ssm.state_dict() if ".mixer." not in k}
    attn_keys = {k for k in attn.state_dict() if ".mixer." not in k}
    assert ssm_keys == attn_keys  # everything but the token mixer is shared
    x = torch.randn(1, 3, 4, 16, 16)
    assert attn(x, 0.5).shape == x.shape
    with pytest.raises(ValueError, match="mixer must be one of"):
        _tiny(mixer="conv")


def test_token_pool_starts_as_the_identity_and_then_reads_every_token():
    plain = _tiny(frame_conditioning=False)
    pooled = DiffusionMamba(**{**DiffusionMamba.tiny_config(), "frame_conditioning": False, "token_pool": True})
    missing, unexpected = pooled.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["text_pool.proj.bias", "text_pool.proj.weight", "text_pool.score.bias",
                               "text_pool.score.weight"] and not unexpected
    x, t = torch.randn(2, 3, 4, 16, 16), torch.tensor([0.3, 0.9])
    tokens, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled_text = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(pooled(x, t, tokens, mask, pooled_text), plain(x, t, tokens, mask, pooled_text))
        for p in pooled.text_pool.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        base = pooled(x, t, tokens, mask, pooled_text)
        changed = tokens.clone()
        changed[:, 2] += 1.0  # one real token of each caption
        moved = pooled(x, t, changed, mask, pooled_text)
        padded = tokens.clone()
        padded[0, 3:] = 100.0  # masked-out tokens of the first caption
        same = pooled(x, t, padded, mask, pooled_text)
    assert (moved - base).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3
    assert torch.allclose(same[0], base[0], atol=1e-5)


def test_token_pool_gradients_reach_the_pool_once_its_projection_is_non_zero():
    model = _tiny(token_pool=True)  # adaLN no longer zero, so the modulation input matters
    with torch.no_grad():
        for p in model.text_pool.parameters():
            p.zero_()
    x, t, tokens = torch.randn(2, 3, 4, 16, 16), torch.tensor([0.5, 0.7]), torch.randn(2, 4, 32)
    model(x, t, tokens).pow(2).mean().backward()
    assert model.text_pool.proj.weight.grad.abs().sum() > 0  # zero-initialised, still trained
    assert model.text_pool.score.weight.grad.abs().sum() == 0  # nothing to score while the output is zero
