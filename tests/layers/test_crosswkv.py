"""CrossWKV: the absorbed state is the delta rule over the text, reads are parallel, padding writes nothing."""

from __future__ import annotations

import pytest
import torch

from genmodels.layers.crosswkv import CrossWKV
from kernels import use_backend


def _layer(mode="crosswkv", dim=32, ctx=24, head_dim=16):
    torch.manual_seed(0)
    layer = CrossWKV(dim, ctx, head_dim=head_dim, mode=mode, layer_id=1, n_layers=3)
    torch.nn.init.normal_(layer.out.weight, std=0.2)  # the zero-init output would hide everything
    for lora in [m for m in layer.modules() if m.__class__.__name__ == "LoRA"]:
        torch.nn.init.normal_(lora.down.weight, std=0.2)
    return layer.double()


def _inputs(b=2, n=10, length=7, dim=32, ctx=24):
    return torch.randn(b, n, dim, dtype=torch.float64), torch.randn(b, length, ctx, dtype=torch.float64)


def test_output_is_zero_at_initialisation():
    layer = CrossWKV(32, 24, head_dim=16)
    x, c = (t.float() for t in _inputs())
    assert layer(x, c).abs().max() == 0


def test_state_equals_step_loop_over_text_and_reads_are_parallel():
    layer = _layer()
    x, c = _inputs()
    with use_backend("naive"):
        ref_state = layer.encode_context(c)
        ref = layer(x, c)
    state = layer.encode_context(c)
    assert torch.allclose(state, ref_state, atol=1e-10)
    out = layer(x, c)
    assert torch.allclose(out, ref, atol=1e-10)
    # every image token reads the same state: permuting image tokens permutes the output
    perm = torch.randperm(x.shape[1])
    assert torch.allclose(layer(x[:, perm], c), out[:, perm], atol=1e-10)


def test_precomputed_state_gives_the_same_output():
    layer = _layer()
    x, c = _inputs()
    assert torch.allclose(layer(x, state=layer.encode_context(c)), layer(x, c), atol=1e-12)


@pytest.mark.parametrize("mode", ["crosswkv", "joint", "softmax"])
def test_padded_context_tokens_change_nothing(mode):
    layer = _layer(mode)
    x, c = _inputs(b=1, length=5)
    padded = torch.cat([c, torch.randn(1, 3, c.shape[-1], dtype=c.dtype)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    assert torch.allclose(layer(x, padded, mask), layer(x, c), atol=1e-10)


def test_output_depends_on_the_context():
    layer = _layer()
    x, c = _inputs()
    assert (layer(x, c) - layer(x, c.flip(1))).abs().max() > 1e-3


def test_joint_mode_is_causal_over_image_tokens():
    layer = _layer("joint")
    x, c = _inputs(b=1)
    out = layer(x, c)
    x2 = x.clone()
    x2[:, -1] += 1.0
    out2 = layer(x2, c)
    assert torch.allclose(out[:, :-1], out2[:, :-1], atol=1e-10)


def test_gradients_reach_the_text_projections():
    layer = _layer()
    x, c = _inputs()
    layer(x, c).square().sum().backward()
    for name in ("ctx_in", "key", "value", "decay_lora", "iclr_lora"):
        grads = [p.grad for p in getattr(layer, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_bad_arguments_raise_value_error():
    layer = _layer()
    x, c = _inputs()
    with pytest.raises(ValueError, match="context must be"):
        layer(x, c[..., :5])
    with pytest.raises(ValueError, match="at least one real token"):
        layer(x, c, torch.zeros(c.shape[:2], dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        CrossWKV(32, 24, head_dim=16, mode="cross")
    with pytest.raises(ValueError, match="give context"):
        layer(x)
