"""SanaDiT(self_attn="softmax"): the same model with softmax self-attention in place of ReLU linear attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genmodels.sana import (
    SELF_ATTN_MODES,
    LinearSelfAttention,
    SanaBlock,
    SanaDiT,
    SoftmaxSelfAttention,
    grow_depth,
    make_self_attention,
)


def _tiny(**overrides) -> SanaDiT:
    return SanaDiT(**{**SanaDiT.tiny_config(), **overrides})


def _perturb(model: SanaDiT, std: float = 0.05) -> SanaDiT:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _inputs(batch=2, size=32, length=5, text_dim=32):
    x = torch.randn(batch, 3, size, size)
    t = torch.rand(batch)
    tokens = torch.randn(batch, length, text_dim)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    return x, t, tokens, mask, torch.randn(batch, text_dim)


@pytest.mark.parametrize("self_attn", SELF_ATTN_MODES)
def test_tiny_model_builds_and_runs_forward(self_attn):
    torch.manual_seed(0)
    model = _perturb(_tiny(self_attn=self_attn))
    assert model.config.self_attn == self_attn
    expected = {"linear": LinearSelfAttention, "softmax": SoftmaxSelfAttention}[self_attn]
    assert all(type(block.attn) is expected for block in model.blocks)
    x, t, tokens, mask, pooled = _inputs()
    out = model(x, t, tokens, mask, pooled)
    assert out.shape == x.shape and torch.isfinite(out).all()
    context = model.cross_attention_states(tokens, mask)  # the sampling path
    torch.testing.assert_close(model(x, t, pooled_text=pooled, context_states=context), out)
    assert f"self_attn={self_attn!r}" in repr(model)


def test_default_is_linear_and_old_configs_stay_valid():
    config = SanaDiT.tiny_config()
    assert "self_attn" not in config
    model = SanaDiT(**config)
    assert model.config.self_attn == "linear"
    assert all(type(block.attn) is LinearSelfAttention for block in model.blocks)


@pytest.mark.parametrize("bad", ["relu", "Softmax", "", None])
def test_unknown_self_attn_raises(bad):
    with pytest.raises(ValueError, match=r"self_attn must be one of \('linear', 'softmax'\)"):
        _tiny(self_attn=bad)
    with pytest.raises(ValueError, match="self_attn must be one of"):
        make_self_attention(bad, 64)
    with pytest.raises(ValueError, match="self_attn must be one of"):
        SanaBlock(64, 32, 2.5, "crosswkv", 32, self_attn=bad)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_softmax_twin_has_exactly_the_linear_models_parameters(qk_norm):
    linear, softmax = _tiny(qk_norm=qk_norm), _tiny(qk_norm=qk_norm, self_attn="softmax")
    a, b = linear.state_dict(), softmax.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    softmax.load_state_dict(a, strict=True)  # a linear checkpoint loads into the twin, and back
    linear.load_state_dict(softmax.state_dict(), strict=True)


def test_same_weights_different_mixer_different_output():
    torch.manual_seed(0)
    linear = _perturb(_tiny())
    softmax = _tiny(self_attn="softmax")
    softmax.load_state_dict(linear.state_dict())
    x, t, tokens, mask, pooled = _inputs()
    assert not torch.allclose(linear(x, t, tokens, mask, pooled), softmax(x, t, tokens, mask, pooled))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_softmax_attention_matches_a_reference(qk_norm):
    torch.manual_seed(0)
    attn = SoftmaxSelfAttention(64, head_dim=32, qk_norm=qk_norm)
    assert attn.n_heads == 2 and "softmax" in repr(attn) and f"qk_norm={qk_norm}" in repr(attn)
    x = torch.randn(2, 10, 64)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    if qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k, v = (t.reshape(2, 10, 2, 32).transpose(1, 2) for t in (q, k, v))
    weights = F.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 64))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)


def test_softmax_attention_keeps_the_activation_dtype():
    attn = SoftmaxSelfAttention(64, head_dim=32, qk_norm=True).to(torch.bfloat16)
    out = attn(torch.randn(1, 16, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_width_not_a_multiple_of_head_dim_raises():
    with pytest.raises(ValueError, match="multiple of head_dim"):
        SoftmaxSelfAttention(48, head_dim=32)


def test_save_load_and_depth_tools_keep_self_attn(tmp_path):
    torch.manual_seed(0)
    model = _perturb(_tiny(self_attn="softmax"))
    model.save_pretrained(tmp_path)
    loaded = SanaDiT.from_pretrained(tmp_path)
    assert loaded.config.self_attn == "softmax"
    x, t, tokens, mask, pooled = _inputs()
    torch.testing.assert_close(loaded(x, t, tokens, mask, pooled), model(x, t, tokens, mask, pooled))
    grown = grow_depth(model, 3)
    assert grown.config.self_attn == "softmax" and type(grown.blocks[-1].attn) is SoftmaxSelfAttention
