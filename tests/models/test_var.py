"""VAR: multi-scale residual quantiser, VQ-VAE, scale-causal transformer (softmax and linear), cached inference,
sampling (CFG ramp, top-k / top-p), FastVAR pruning, zero-shot inpainting."""

from __future__ import annotations

import pytest
import torch

from genmodels.var.quant import MultiScaleQuantizer, downsample
from genmodels.var.var import (
    FastVARConfig,
    VARTransformer,
    block_causal_mask,
    cfg_ramp,
    filter_logits,
    pivotal_tokens,
    resize_mask,
    sample_var,
)
from genmodels.var.vqvae import MultiScaleVQVAE


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return MultiScaleVQVAE(**MultiScaleVQVAE.tiny_config()).eval()


def text_inputs(b=3, length=5, dim=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, length, dim, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 3:] = False
    return tokens, mask, torch.randn(b, dim, generator=g)


def make_var(**overrides):
    torch.manual_seed(0)
    # γ = 1 so the blocks are far from the identity and the comparisons below see every path
    return VARTransformer(**{**VARTransformer.tiny_config(), "init_adaln_gamma": 1.0, **overrides}).eval()


def incremental_logits(m, inputs, tokens, mask, pooled, fastvar=None):
    text = m.cross_attention_states(tokens, mask)
    cond = m.condition(pooled)
    cache = m.new_cache()
    fv = fastvar.resolved(m.num_scales, len(m.blocks)) if fastvar is not None else None
    fv_cache = [{} for _ in m.blocks]
    outs, start = [m.step(m.start_tokens(cond), 0, cond, text, cache, fv, fv_cache)], 0
    for k in range(1, m.num_scales):
        n = m.block_sizes[k]
        outs.append(m.step(m.embed_scale_inputs(inputs[:, start:start + n], k), k, cond, text, cache, fv, fv_cache))
        start += n
    return torch.cat(outs, 1), cache


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# quantiser


def test_quantizer_residual_encoding_decodes_to_sum_of_scales(vae):
    q = vae.quantize
    f = torch.randn(2, q.dim, q.side, q.side)
    f_st, loss, ids = q(f)
    assert [tuple(i.shape) for i in ids] == [(2, p, p) for p in q.patch_nums]
    assert torch.equal(torch.stack([i.float() for i in q.encode(f)[-1:]]), torch.stack([ids[-1].float()]))
    f_hat = q.ids_to_fhat(ids)
    assert torch.allclose(f_st, f_hat, atol=1e-5)  # straight-through output equals f̂ in value
    assert loss.item() > 0
    # every scale's ids are the nearest codes of the remaining residual, area-downsampled
    rest = f.clone()
    for k, p in enumerate(q.patch_nums):
        r = downsample(rest, p).permute(0, 2, 3, 1).reshape(-1, q.dim)
        d = torch.cdist(r, q.embedding.weight)
        assert torch.equal(d.argmin(1).view(2, p, p), ids[k])
        rest = rest - q.scale_embedding(ids[k], k)


def test_quantizer_straight_through_gradient_reaches_encoder(vae):
    q = vae.quantize.train()
    f = torch.randn(2, q.dim, q.side, q.side, requires_grad=True)
    f_st, loss, _ = q(f)
    f_st.sum().backward()
    assert torch.allclose(f.grad, torch.ones_like(f))  # identity gradient through the quantiser
    q.zero_grad()
    _, loss, _ = q(torch.randn(2, q.dim, q.side, q.side))
    loss.backward()
    assert q.embedding.weight.grad.abs().sum() > 0 and q.phis[0].weight.grad.abs().sum() > 0


def test_usage_tracking_and_dead_code_restart():
    q = MultiScaleQuantizer(16, 4, (1, 2, 4)).train()
    f = torch.randn(8, 4, 4, 4) * 3
    for _ in range(3):
        q(f)
    assert q.usage.shape == (3, 16)
    assert torch.allclose(q.usage.sum(1), torch.full((3,), 1 - 0.99**3), atol=1e-5)
    dead_before = (q.usage < 0.01 / 16).all(0).sum().item()
    assert dead_before > 0  # codes start tiny, far from f: most are never hit
    restarted = q.restart_dead_codes(f, generator=torch.Generator().manual_seed(0))
    assert restarted == dead_before
    assert q.usage_per_scale()[2] >= restarted / 16 - 1e-6
    with torch.no_grad():
        ids = q(f)[2]
    assert len(torch.unique(torch.cat([i.flatten() for i in ids]))) > 16 - dead_before  # restarted codes get used


def test_phi_sharing_follows_reference_ticks():
    q = MultiScaleQuantizer(8, 4, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), share_phi=4)
    assert len(q.phis) == 4
    assert q.phi_index[0] == 0 and q.phi_index[-1] == 3
    assert q.phi_index == sorted(q.phi_index)
    assert len(MultiScaleQuantizer(8, 4, (1, 2, 4), share_phi=1).phis) == 1


def test_bad_schedules_and_ids_are_refused(vae):
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiScaleQuantizer(8, 4, (1, 3, 2))
    with pytest.raises(ValueError, match="latent side"):
        MultiScaleVQVAE(**{**MultiScaleVQVAE.tiny_config(), "patch_nums": (1, 2, 8)})
    ids = vae.images_to_ids(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="token ids"):
        vae.quantize.ids_to_fhat([ids[0], ids[1], ids[2] + 1000])
    with pytest.raises(ValueError, match="images must be"):
        vae.images_to_ids(torch.zeros(1, 3, 16, 16))


def test_vqvae_round_trip_shapes(vae):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, vq_loss, ids = vae(images)
    assert recon.shape == images.shape and vq_loss.ndim == 0
    out = vae.ids_to_images(ids)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out, recon.clamp(-1, 1), atol=1e-5)


def test_teacher_inputs_are_downsampled_running_reconstruction(vae):
    q = vae.quantize
    ids = vae.images_to_ids(torch.rand(2, 3, 32, 32) * 2 - 1)
    inputs = q.teacher_inputs(ids)
    assert inputs.shape == (2, sum(p * p for p in q.patch_nums[1:]), q.dim)
    f_hat1 = q.ids_to_fhat(ids, upto=1)
    expect = downsample(f_hat1, q.patch_nums[1]).flatten(2).transpose(1, 2)
    assert torch.allclose(inputs[:, :4], expect, atol=1e-6)


# transformer


def test_block_causal_mask():
    m = block_causal_mask([1, 4])
    assert m.shape == (5, 5)
    assert m[0, 0] and not m[0, 1:].any() and m[1:].all()


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("cross_attn", ["crosswkv", "softmax", "none"])
def test_cached_inference_equals_masked_full_pass(vae, attention, cross_attn):
    m = make_var(attention=attention, cross_attn=cross_attn)
    ids = vae.images_to_ids(torch.rand(3, 3, 32, 32) * 2 - 1)
    inputs = vae.quantize.teacher_inputs(ids)
    tokens, mask, pooled = text_inputs()
    full = m(inputs, tokens, mask, pooled)
    assert full.shape == (3, m.seq_len, m.config.vocab_size)
    inc, cache = incremental_logits(m, inputs, tokens, mask, pooled)
    assert rel_err(inc, full) < 1e-5
    if attention == "softmax":
        assert cache[0]["k"].shape[2] == m.seq_len  # the KV cache grew to every token
    else:
        assert set(cache[0]) == {"state"}  # one fixed-size state per layer
        head_dim = m.blocks[0].attn.head_dim
        assert cache[0]["state"].shape == (3, m.blocks[0].attn.heads, head_dim, head_dim + 1)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_scales_do_not_see_finer_scales(vae, attention):
    m = make_var(attention=attention)
    ids = vae.images_to_ids(torch.rand(1, 3, 32, 32) * 2 - 1)
    inputs = vae.quantize.teacher_inputs(ids)
    tokens, mask, pooled = text_inputs(1)
    base = m(inputs, tokens, mask, pooled)
    changed = inputs.clone()
    changed[:, 4:] += 1.0  # the last scale's inputs
    out = m(changed, tokens, mask, pooled)
    assert torch.allclose(out[:, :5], base[:, :5], atol=1e-6)  # scales 1 and 2 unaffected
    assert not torch.allclose(out[:, 5:], base[:, 5:])
    within = inputs.clone()
    within[:, 5] += 1.0  # one token of the last scale: its whole scale sees it (bidirectional)
    out = m(within, tokens, mask, pooled)
    assert (out[:, 5:] - base[:, 5:]).abs().amax(-1).gt(1e-7).all()


def test_text_conditions_logits_and_dropout_uses_null_text(vae):
    m = make_var()
    inputs = vae.quantize.teacher_inputs(vae.images_to_ids(torch.rand(2, 3, 32, 32) * 2 - 1))
    tokens, mask, pooled = text_inputs(2)
    a = m(inputs, tokens, mask, pooled)
    b = m(inputs, tokens.flip(0), mask.flip(0), pooled.flip(0))
    assert not torch.allclose(a, b)
    dropped = m(inputs, tokens, mask, pooled, drop_text=torch.tensor([True, True]))
    null_t, null_m, null_p = m.null_text(2, tokens.shape[1])
    assert torch.allclose(dropped, m(inputs, null_t, null_m, null_p), atol=1e-6)


def test_training_step_reduces_loss(vae):
    from genmodels.var.objective import VARObjective

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, captions):
            g = torch.Generator().manual_seed(len(captions[0]))
            return torch.randn(len(captions), 4, 32, generator=g), None, torch.randn(len(captions), 32, generator=g)

    m = make_var(init_adaln_gamma=1e-3).train()
    objective = VARObjective(vae, Encoder(), text_drop_prob=0.0)
    objective.check_model(m)
    batch = {"pixel_values": torch.rand(4, 3, 32, 32) * 2 - 1, "caption": ["a"] * 4}
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = objective(m, batch).mean().item()
    for _ in range(30):
        loss = objective(m, batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="does not match"):
        objective.check_model(make_var(vocab_size=64))


# sampling


def test_filter_logits_top_k_then_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.85)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]
    assert not torch.isinf(filter_logits(logits)).any()


def test_cfg_ramp_is_linear_over_scales():
    assert [cfg_ramp(2.0, k, 5) for k in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_sampling_is_seeded_and_decodes(vae):
    m = make_var()
    tokens, mask, pooled = text_inputs()
    kw = dict(encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled, cfg=2.0, top_k=8,
              top_p=0.9)
    a = sample_var(m, vae.quantize, generator=torch.Generator().manual_seed(0), **kw)
    b = sample_var(m, vae.quantize, generator=torch.Generator().manual_seed(0), **kw)
    c = sample_var(m, vae.quantize, generator=torch.Generator().manual_seed(1), **kw)
    assert a.passes == m.num_scales
    assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids))
    assert not all(torch.equal(x, y) for x, y in zip(a.ids, c.ids))
    assert torch.allclose(a.f_hat, vae.quantize.ids_to_fhat(a.ids), atol=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        sample_var(m, vae.quantize, **{**kw, "top_p": 0.0})
    with pytest.raises(ValueError, match="cfg"):
        sample_var(m, vae.quantize, **{**kw, "cfg": float("nan")})


def test_top_k_one_is_greedy(vae):
    m = make_var()
    tokens, mask, pooled = text_inputs(1)
    s = sample_var(m, vae.quantize, encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled,
                   top_k=1, generator=torch.Generator().manual_seed(0))
    inputs = vae.quantize.teacher_inputs(s.ids)
    logits = m(inputs, tokens, mask, pooled)
    assert torch.equal(logits.argmax(-1), torch.cat([i.flatten(1) for i in s.ids], 1))


def test_inpainting_forces_known_tokens_at_every_scale(vae):
    m = make_var()
    tokens, mask, pooled = text_inputs(2)
    ids = vae.images_to_ids(torch.rand(2, 3, 32, 32) * 2 - 1)
    keep = torch.zeros(2, 4, 4, dtype=torch.bool)
    keep[:, :, :2] = True  # left half known
    s = sample_var(m, vae.quantize, encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled,
                   known_ids=ids, known_mask=keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.ids[0], ids[0])  # the 1×1 scale is always forced
    for k, p in enumerate(vae.quantize.patch_nums):
        known = resize_mask(keep.float(), p)
        assert torch.equal(s.ids[k][known], ids[k][known])
    assert not torch.equal(s.ids[-1][~keep], ids[-1][~keep])  # the rest is generated


# FastVAR


def test_pivotal_tokens_pick_outliers():
    x = torch.zeros(1, 6, 2)
    x[0, 4] = 5.0
    x[0, 1] = -3.0
    assert pivotal_tokens(x, 2).tolist() == [[1, 4]]


def test_fastvar_config_validation_and_parse():
    fv = FastVARConfig.parse("-2:0.4, -1:0.5;skip=0").resolved(4, 3)
    assert fv.prune == {2: 0.4, 3: 0.5} and fv.cache_scale == 1 and fv.layers == (0, 2)
    with pytest.raises(ValueError, match="first scale"):
        FastVARConfig(prune={0: 0.5}).resolved(4, 3)
    with pytest.raises(ValueError, match="ratio"):
        FastVARConfig(prune={2: 1.0}).resolved(4, 3)
    with pytest.raises(ValueError, match="scale:ratio"):
        FastVARConfig.parse("half")
    with pytest.raises(ValueError, match="skip_last"):
        FastVARConfig(skip_last=4).resolved(4, 3)
    fv = FastVARConfig.parse("-1:0.5;layers=1-2;cache=1").resolved(4, 3)
    assert fv.layers == (1, 2) and fv.cache_scale == 1 and fv.prune == {3: 0.5}
    with pytest.raises(ValueError, match="first-last"):
        FastVARConfig.parse("-1:0.5;layers=2")
    with pytest.raises(ValueError, match="layers must be"):
        FastVARConfig.parse("-1:0.5;layers=1-3").resolved(4, 3)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_fastvar_zero_pruning_is_exact_and_pruning_restores_from_cache(vae, attention):
    m = make_var(attention=attention)
    inputs = vae.quantize.teacher_inputs(vae.images_to_ids(torch.rand(2, 3, 32, 32) * 2 - 1))
    tokens, mask, pooled = text_inputs(2)
    plain, _ = incremental_logits(m, inputs, tokens, mask, pooled)
    zero, _ = incremental_logits(m, inputs, tokens, mask, pooled, FastVARConfig(prune={-1: 0.0}))
    assert torch.equal(zero, plain)
    pruned, cache = incremental_logits(m, inputs, tokens, mask, pooled, FastVARConfig(prune={-1: 0.5}))
    assert torch.equal(pruned[:, :5], plain[:, :5])  # scales before the pruned one are untouched
    assert not torch.allclose(pruned[:, 5:], plain[:, 5:])
    assert rel_err(pruned[:, 5:], plain[:, 5:]) < 1.0  # restored from the cache, not zeros
    if attention == "softmax":
        assert cache[0]["k"].shape[2] == 5 + 8  # only the 8 kept tokens of the 16 joined the KV cache


def test_fastvar_skip_last_scale(vae):
    m = make_var()
    tokens, mask, pooled = text_inputs(1)
    s = sample_var(m, vae.quantize, encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled,
                   fastvar=FastVARConfig(skip_last=1), generator=torch.Generator().manual_seed(0))
    assert s.passes == m.num_scales - 1 and len(s.ids) == m.num_scales - 1
    assert s.f_hat.shape[-1] == vae.quantize.side


def test_save_load_round_trip(tmp_path, vae):
    m = make_var(attention="linear")
    m.save_pretrained(tmp_path / "var", safe_serialization=True)
    loaded = VARTransformer.from_pretrained(tmp_path / "var", use_safetensors=True).eval()
    inputs = vae.quantize.teacher_inputs(vae.images_to_ids(torch.rand(1, 3, 32, 32) * 2 - 1))
    tokens, mask, pooled = text_inputs(1)
    assert torch.allclose(loaded(inputs, tokens, mask, pooled), m(inputs, tokens, mask, pooled), atol=1e-6)
    assert loaded.config.attention == "linear"


def test_bad_inputs_are_refused(vae):
    m = make_var()
    tokens, mask, pooled = text_inputs(1)
    with pytest.raises(ValueError, match="inputs must be"):
        m(torch.zeros(1, 3, 8), tokens, mask, pooled)
    with pytest.raises(ValueError, match="attention"):
        VARTransformer(**{**VARTransformer.tiny_config(), "attention": "flash"})
    with pytest.raises(ValueError, match="pooled"):
        VARTransformer(**{**VARTransformer.tiny_config(), "pooled_text_dim": 0})
    other = MultiScaleQuantizer(64, 8, (1, 2, 4))
    with pytest.raises(ValueError, match="does not match"):
        sample_var(m, other, encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled)
    with pytest.raises(ValueError, match="known_mask"):
        ids = vae.images_to_ids(torch.zeros(1, 3, 32, 32))
        sample_var(m, vae.quantize, encoder_hidden_states=tokens, encoder_attention_mask=mask, pooled_text=pooled,
                   known_ids=ids, known_mask=torch.ones(1, 2, 2, dtype=torch.bool))


def test_adapt_scale_schedule_copies_shared_scales_and_resizes_new_ones():
    from genmodels.var.var import adapt_scale_schedule

    torch.manual_seed(0)
    old = VARTransformer(**VARTransformer.tiny_config())  # scales 1, 2, 4
    new = VARTransformer(**{**VARTransformer.tiny_config(), "patch_nums": (1, 2, 3, 4, 6)})
    state = adapt_scale_schedule(old.state_dict(), old.patch_nums, new.patch_nums)
    new.load_state_dict(state)  # strict: every table has the new shape
    pos_old, pos_new = old.pos_embed[0], new.pos_embed[0]
    # scales 1, 2 and 4 are copied row for row; 1 + 4 rows, then the 4×4 scale after the new 3×3 one
    assert torch.equal(pos_new[:5], pos_old[:5])
    assert torch.equal(pos_new[5 + 9:5 + 9 + 16], pos_old[5:21])
    lvl_old, lvl_new = old.lvl_embed.weight, new.lvl_embed.weight
    assert torch.equal(lvl_new[[0, 1, 3]], lvl_old)
    # 3 is nearest to 2 and 4 alike: the larger wins; 6 takes the 4×4 scale's level and its resized grid
    assert torch.equal(lvl_new[2], lvl_old[2]) and torch.equal(lvl_new[4], lvl_old[2])
    grid4 = pos_old[5:21].T.reshape(1, -1, 4, 4)
    want6 = torch.nn.functional.interpolate(grid4, size=(6, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(pos_new[30:66], want6.reshape(-1, 36).T)
    # all other weights are the old ones, and the adapted model runs a full pass on the new schedule
    assert torch.equal(new.head.weight, old.head.weight)
    inputs = torch.randn(2, new.seq_len - 1, new.config.latent_channels)
    text = torch.randn(2, 5, new.config.text_dim)
    logits = new(inputs, encoder_hidden_states=text, pooled_text=torch.randn(2, new.config.pooled_text_dim))
    assert logits.shape == (2, new.seq_len, new.config.vocab_size) and torch.isfinite(logits).all()
    # the same schedule is the identity, and a state dict of another schedule is refused
    same = adapt_scale_schedule(old.state_dict(), old.patch_nums, old.patch_nums)
    assert all(torch.equal(same[k], v) for k, v in old.state_dict().items())
    with pytest.raises(ValueError, match="do not match the schedule"):
        adapt_scale_schedule(old.state_dict(), (1, 2, 3), new.patch_nums)
