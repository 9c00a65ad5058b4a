"""SanaDiT: structure, initialisation, attention numerics, text conditioning, SANA 1.5 depth tools, save/load,
training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genmodels.diffusion.flow import FlowObjective
from genmodels.models import build_model
from genmodels.sana import (
    LinearSelfAttention,
    SanaDiT,
    block_importance,
    grow_depth,
    prune_blocks,
    relative_position_embedding,
)


def _tiny(**overrides) -> SanaDiT:
    return SanaDiT(**{**SanaDiT.tiny_config(), **overrides})


def _perturb(model: SanaDiT, std: float = 0.05) -> SanaDiT:
    """Move every zero-initialised weight off zero so the output depends on everything."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _inputs(batch=2, size=32, length=5, text_dim=32):
    x = torch.randn(batch, 3, size, size)
    t = torch.rand(batch)
    tokens = torch.randn(batch, length, text_dim)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False  # padding in the first prompt
    pooled = torch.randn(batch, text_dim)
    return x, t, tokens, mask, pooled


# Structure and initialisation


def test_output_has_the_input_shape_on_any_patch_multiple():
    model = _perturb(_tiny())
    for h, w in ((32, 32), (16, 48)):
        x, t, tokens, mask, pooled = _inputs()
        out = model(torch.randn(2, 3, h, w), t, tokens, mask, pooled)
        assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()


def test_side_not_divisible_by_the_patch_raises():
    with pytest.raises(ValueError, match="multiples of patch_size"):
        _tiny()(torch.randn(1, 3, 30, 32), 0.5)


def test_no_positional_embedding_anywhere():
    model = _tiny()
    assert not list(model.buffers())
    assert not [n for n, _ in model.named_parameters() if "pos" in n]


def test_sample_prediction_returns_the_velocity_of_its_clean_image_estimate():
    """prediction="sample": the last layer's output is x̂₀ and forward returns (x_t − x̂₀) / max(t, 0.05), so
    x_t − t·v recovers x̂₀ for t ≥ 0.05 (the sampler's x̂₀), and the velocity model with the same weights
    returns the raw output."""
    from einops import rearrange

    torch.manual_seed(0)
    model = _perturb(_tiny(prediction="sample"))
    twin = _tiny()
    twin.load_state_dict(model.state_dict())
    x, _, tokens, mask, pooled = _inputs()
    t = torch.tensor([0.6, 0.01])
    captured = []
    model.final_layer.register_forward_hook(lambda mod, inp, out: captured.append(out))
    v = model(x, t, tokens, mask, pooled)
    x0_hat = rearrange(captured[0], "b (h w) (p q c) -> b c (h p) (w q)", h=8, w=8, p=4, q=4)
    torch.testing.assert_close(v, (x - x0_hat) / torch.tensor([0.6, 0.05])[:, None, None, None])
    torch.testing.assert_close(x[:1] - 0.6 * v[:1], x0_hat[:1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(twin(x, t, tokens, mask, pooled), x0_hat)


def test_bad_prediction_settings_raise():
    with pytest.raises(ValueError, match="prediction must be one of"):
        _tiny(prediction="epsilon")
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        _tiny(prediction="sample", out_channels=6)


def test_output_is_exactly_zero_at_init():
    x, t, tokens, mask, pooled = _inputs()
    out = _tiny()(x, t, tokens, mask, pooled)
    assert torch.equal(out, torch.zeros_like(out))


def test_scale_shift_tables_start_at_randn_over_sqrt_width():
    torch.manual_seed(0)
    model = SanaDiT(**{**SanaDiT.tiny_config(), "width": 128, "depth": 4})
    tables = torch.stack([b.scale_shift_table for b in model.blocks])
    assert tables.shape == (4, 6, 128)
    assert tables.std().item() == pytest.approx(128**-0.5, rel=0.05)


def test_weight_decay_only_on_linear_and_conv_weights():
    model = _tiny()
    groups = {g["name"]: g for g in model.param_groups(1e-3, 0.1)}
    decayed = {id(p) for p in groups["wd"]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[i].endswith("weight") for i in decayed)
    assert {id(model.null_text_embedding), id(model.blocks[0].scale_shift_table)}.isdisjoint(decayed)
    assert id(model.blocks[0].mlp.depthwise.weight) in decayed and groups["no_wd"]["weight_decay"] == 0.0


def test_registered_in_the_model_registry():
    model = build_model("sana", "tiny")
    assert isinstance(model, SanaDiT) and model.config.depth == 2


# Attention numerics


def test_linear_self_attention_matches_the_dense_formula():
    attn = LinearSelfAttention(64, head_dim=32)
    x = torch.randn(2, 10, 64)
    q, k, v = (t.double().unflatten(-1, (2, 32)).transpose(1, 2) for t in attn.qkv(x).chunk(3, -1))
    fq, fk = F.relu(q), F.relu(k)
    num = (fq @ fk.transpose(-1, -2)) @ v  # relu(q) relu(k)ᵀ v
    den = fq @ fk.sum(-2, keepdim=True).transpose(-1, -2) + 1e-8  # relu(q)·Σ relu(k) + eps
    expected = attn.proj((num / den).transpose(1, 2).flatten(2).float())
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_runs_in_float32_under_bfloat16_activations():
    attn = LinearSelfAttention(64, head_dim=32, qk_norm=True).to(torch.bfloat16)
    x = torch.randn(1, 300, 64, dtype=torch.bfloat16) * 50
    out = attn(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# Text conditioning


@pytest.mark.parametrize("mode", ["crosswkv", "softmax", "joint"])
def test_precomputed_text_states_give_the_same_output(mode):
    model = _perturb(_tiny(cross_attn=mode))
    x, t, tokens, mask, pooled = _inputs()
    context = model.cross_attention_states(tokens, mask)
    assert (context.states is not None) == (mode == "crosswkv")
    torch.testing.assert_close(model(x, t, pooled_text=pooled, context_states=context),
                               model(x, t, tokens, mask, pooled), rtol=1e-5, atol=1e-6)


def test_text_changes_the_output():
    model = _perturb(_tiny())
    x, t, tokens, mask, pooled = _inputs()
    assert not torch.allclose(model(x, t, tokens, mask, pooled), model(x, t, -tokens, mask, pooled), atol=1e-4)


def test_pooled_mlp_path_is_scale_invariant_and_reaches_the_output():
    from genmodels.layers.dit import PooledTextEmbedder

    torch.manual_seed(0)
    mlp, linear = _tiny(pooled_mlp=True), _tiny()
    assert isinstance(mlp.pooled_embedder, PooledTextEmbedder) and isinstance(linear.pooled_embedder, torch.nn.Linear)
    pooled = F.normalize(torch.randn(64, 32), dim=-1)  # CLIP's pooled embedding is L2-normalised
    torch.testing.assert_close(mlp.pooled_embedder(3.0 * pooled), mlp.pooled_embedder(pooled), rtol=1e-4, atol=1e-5)
    x, t, tokens, mask, _ = _inputs()
    model = _perturb(mlp)
    assert not torch.allclose(model(x, t, tokens, mask, pooled[:2]), model(x, t, tokens, mask, pooled[2:4]), atol=1e-4)


def test_folders_saved_before_pooled_mlp_and_prediction_existed_load_as_before(tmp_path):
    """Folders written before ``pooled_mlp`` / ``prediction`` / ``cross_norm`` existed lack those keys: plain
    Linear, velocity, raw residual stream into the cross-attention."""
    import json

    model = _perturb(_tiny())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("pooled_mlp")
    config.pop("prediction")
    config.pop("cross_norm")
    config.pop("pos_embed")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = SanaDiT.from_pretrained(tmp_path)
    assert not loaded.config.pooled_mlp and isinstance(loaded.pooled_embedder, torch.nn.Linear)
    assert loaded.config.prediction == "velocity" and not loaded.config.cross_norm
    assert loaded.config.pos_embed == "none"
    x, t, tokens, mask, pooled = _inputs()
    torch.testing.assert_close(loaded(x, t, tokens, mask, pooled), model(x, t, tokens, mask, pooled), rtol=0, atol=0)


@pytest.mark.parametrize("cross_norm", [False, True])
def test_cross_norm_feeds_the_cross_attention_the_layer_normed_stream(cross_norm, tmp_path):
    model = _perturb(_tiny(cross_norm=cross_norm))
    seen = []
    model.blocks[1].cross_attn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    x, t, tokens, mask, pooled = _inputs()
    out = model(x, t, tokens, mask, pooled)
    (stream,) = seen
    normed = torch.allclose(stream.mean(-1), torch.zeros(()), atol=1e-5) and \
        torch.allclose(stream.var(-1, unbiased=False), torch.ones(()), atol=1e-3)
    assert normed == cross_norm
    model.save_pretrained(tmp_path)
    loaded = SanaDiT.from_pretrained(tmp_path)
    assert loaded.config.cross_norm == cross_norm
    torch.testing.assert_close(loaded(x, t, tokens, mask, pooled), out, rtol=0, atol=0)


def test_relative_position_embedding_places_tokens_on_the_trained_grid_at_any_resolution():
    from genmodels.sana import _fourier_1d

    emb = relative_position_embedding(8, 8, 8, 16)
    assert emb.shape == (64, 16) and len({tuple(r) for r in emb.tolist()}) == 64  # every token distinct
    centred = emb - emb.mean(0)
    # every channel varies over the picture but cos(π·p), which is 0 at every half-integer place (one per axis)
    assert int((centred.abs().amax(0) > 0.1).sum()) == 16 - 2
    # at the trained grid token (i, j) sits at (i + ½, j + ½): rows in the first half, columns in the second
    expected = torch.cat([_fourier_1d(torch.tensor([3.5]), 8, 8), _fourier_1d(torch.tensor([5.5]), 8, 8)], -1)[0]
    torch.testing.assert_close(emb[3 * 8 + 5], expected)
    # at twice the resolution token (3, 0) of 16 sits at (1.75, 0.25) on the same 8-token scale
    double = relative_position_embedding(16, 16, 8, 16)
    expected = torch.cat([_fourier_1d(torch.tensor([1.75]), 8, 8), _fourier_1d(torch.tensor([0.25]), 8, 8)], -1)[0]
    torch.testing.assert_close(double[3 * 16 + 0], expected)


def test_sincos_position_embedding_tells_places_apart_and_can_be_added_to_a_trained_model(tmp_path):
    plain = _perturb(_tiny())
    model = _tiny(pos_embed="sincos")
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)  # --init-config pos_embed
    assert missing == ["pos_gate"] and not unexpected and torch.equal(model.pos_gate, torch.ones(64))
    x, t, tokens, mask, pooled = _inputs()
    model(x, t, tokens, mask, pooled).square().mean().backward()
    assert model.pos_gate.grad.abs().sum() > 0

    def centre_patches(m):
        """The output on a flat picture at the four centre patches, which no zero padding reaches in 2 blocks."""
        out = m(torch.zeros(1, 3, 32, 32), 0.5, tokens[:1], mask[:1], pooled[:1])
        return out.unfold(2, 4, 4).unfold(3, 4, 4)[0, :, 3:5, 3:5].reshape(3, 4, 16).transpose(0, 1)

    with torch.no_grad():
        without, with_pos = centre_patches(plain), centre_patches(model)
    torch.testing.assert_close(without, without[:1].expand_as(without), rtol=0, atol=1e-5)  # no idea where
    assert (with_pos - with_pos[:1]).abs().amax(dim=(1, 2))[1:].min() > 1e-2  # each place its own output
    model.save_pretrained(tmp_path)
    loaded = SanaDiT.from_pretrained(tmp_path)
    assert loaded.config.pos_embed == "sincos"
    torch.testing.assert_close(loaded(x, t, tokens, mask, pooled), model(x, t, tokens, mask, pooled), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pos_embed"):
        _tiny(pos_embed="learned")


def test_dropped_text_sees_only_the_null_token():
    model = _perturb(_tiny())
    x, t, tokens, mask, pooled = _inputs()
    out = model(x, t, tokens, mask, pooled, drop_text=torch.tensor([True, False]))
    null_tokens, null_mask, null_pooled = model.null_text(1)
    torch.testing.assert_close(out[:1], model(x[:1], t[:1], null_tokens, null_mask, null_pooled), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(out[1:], model(x[1:], t[1:], tokens[1:], mask[1:], pooled[1:]), rtol=1e-5,
                               atol=1e-6)


def test_caption_dropout_trains_the_null_embeddings():
    model = _perturb(_tiny())
    x, t, tokens, mask, pooled = _inputs()
    model(x, t, tokens, mask, pooled, drop_text=torch.tensor([True, False])).square().sum().backward()
    assert model.null_text_embedding.grad.abs().sum() > 0 and model.null_pooled_embedding.grad.abs().sum() > 0


def test_mismatched_text_raises():
    model = _tiny()
    x, t, tokens, mask, pooled = _inputs()
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, t, tokens[:, :, :16])
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        model(x, t, tokens, mask[:, :3])
    with pytest.raises(ValueError, match="context_states has batch"):
        model(x, t, context_states=model.cross_attention_states(tokens[:1], mask[:1]))


# SANA 1.5: growth, importance, pruning


def test_grow_depth_keeps_the_output_at_init():
    model = _perturb(_tiny())
    x, t, tokens, mask, pooled = _inputs()
    for positions in ("end", "start", [1, 3]):
        grown = grow_depth(model, 4, positions)
        assert grown.config.depth == 4 and len(grown.blocks) == 4
        torch.testing.assert_close(grown(x, t, tokens, mask, pooled), model(x, t, tokens, mask, pooled),
                                   rtol=0, atol=0)


def test_grown_block_has_zero_importance_and_pruning_it_changes_nothing():
    model = _perturb(_tiny())
    grown = grow_depth(model, 3, [1])
    x, t, tokens, mask, pooled = _inputs()
    importance = block_importance(grown, [dict(x=x, timestep=t, encoder_hidden_states=tokens,
                                               encoder_attention_mask=mask, pooled_text=pooled)])
    assert importance.shape == (3,)
    assert importance[1] < 1e-6 and importance[0] > 1e-3 and importance[2] > 1e-3
    pruned = prune_blocks(grown, [i for i in range(3) if i != int(importance.argmin())])
    assert pruned.config.depth == 2
    torch.testing.assert_close(pruned(x, t, tokens, mask, pooled), grown(x, t, tokens, mask, pooled), rtol=0, atol=0)


def test_prune_rejects_bad_indices():
    with pytest.raises(ValueError, match="distinct block indices"):
        prune_blocks(_tiny(), [0, 0])


# Save / load, checkpointing, training


def test_save_and_load_round_trip(tmp_path):
    model = _perturb(_tiny(cross_attn="softmax", qk_norm=True, prediction="sample", pooled_mlp=True))
    model.save_pretrained(tmp_path)
    loaded = SanaDiT.from_pretrained(tmp_path)
    assert loaded.config.cross_attn == "softmax" and loaded.config.qk_norm
    assert loaded.config.prediction == "sample" and loaded.config.pooled_mlp
    x, t, tokens, mask, pooled = _inputs()
    torch.testing.assert_close(loaded(x, t, tokens, mask, pooled), model(x, t, tokens, mask, pooled), rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _perturb(_tiny())
    x, t, tokens, mask, pooled = _inputs()
    model(x, t, tokens, mask, pooled).square().sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.enable_gradient_checkpointing()
    model(x, t, tokens, mask, pooled).square().sum().backward()
    assert len(expected) > 50
    for name, p in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prediction", ["velocity", "sample"])
def test_tiny_model_overfits_one_image(prediction):
    torch.manual_seed(0)  # init and text: not whatever the tests before left in the global generator
    model = _tiny(prediction=prediction)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    image = torch.stack([xx, yy, xx * yy])[None].expand(8, -1, -1, -1)
    batch = {"pixel_values": image, "encoder_hidden_states": torch.randn(1, 4, 32).expand(8, -1, -1),
             "pooled_text": torch.randn(1, 32).expand(8, -1)}
    objective = FlowObjective(text_drop_prob=0.0)

    def eval_loss() -> float:
        with torch.no_grad():
            return objective(model, batch, torch.Generator().manual_seed(123)).mean().item()

    before = eval_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = objective(model, batch, generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < before / 5
