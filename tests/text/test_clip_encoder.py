"""The CLIP text encoder: per-token and pooled features, masks, loading paths, bad input."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from genmodels.text import CLIPTextEncoder, TextEncoderError
from genmodels.text.clip import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS

MODEL_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return open_clip.CLIP(**MODEL_CFG).eval()


def test_pooled_features_equal_open_clip_text_embedding(clip_model):
    encoder = CLIPTextEncoder.from_clip(clip_model, MODEL_CFG)
    prompts = ["a red circle", "three blue squares to the left of a green triangle"]
    _, _, pooled = encoder.encode(prompts)
    with torch.no_grad():
        reference = clip_model.encode_text(open_clip.SimpleTokenizer(context_length=16)(prompts), normalize=True)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-6)


def test_tokens_and_mask_cover_start_to_end_token(clip_model):
    encoder = CLIPTextEncoder.from_clip(clip_model, MODEL_CFG)
    tokens, mask, pooled = encoder.encode(["a circle", "a purple triangle above a small square"])
    assert tokens.shape == (2, 16, 32) and mask.shape == (2, 16) and mask.dtype == torch.bool
    ids = encoder.tokenize(["a circle", "a purple triangle above a small square"])
    assert mask.sum(1).tolist() == [int((row != 0).sum()) for row in ids]  # <start> … <end>, no padding
    assert mask[:, 0].all() and pooled.norm(dim=-1).sub(1).abs().max() < 1e-5


def test_padding_does_not_change_real_token_features(clip_model):
    """Causal attention: a token's features depend on the tokens before it only."""
    encoder = CLIPTextEncoder.from_clip(clip_model, MODEL_CFG)
    tokens, mask, _ = encoder.encode(["a red circle", "a red circle and a blue square"])
    n = int(mask[0].sum()) - 1  # shared prefix "<start> a red circle"
    torch.testing.assert_close(tokens[0, :n], tokens[1, :n])


def test_diffusers_round_trip_is_exact(tmp_path, clip_model):
    encoder = CLIPTextEncoder.from_clip(clip_model, MODEL_CFG)
    encoder.save_pretrained(tmp_path / "enc")
    loaded = CLIPTextEncoder.from_pretrained(str(tmp_path / "enc"), use_safetensors=True)
    for a, b in zip(encoder.encode(["two squares"]), loaded.encode(["two squares"]), strict=True):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_open_clip_folder_loads_in_open_clip_and_here(tmp_path, clip_model):
    folder = tmp_path / "clip"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(folder / OPEN_CLIP_WEIGHTS))
    (folder / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": MODEL_CFG}))
    ours = CLIPTextEncoder.from_open_clip(folder)
    theirs = open_clip.create_model(f"local-dir:{folder}").eval()
    prompts = ["a yellow square"]
    with torch.no_grad():
        reference = theirs.encode_text(open_clip.SimpleTokenizer(context_length=16)(prompts), normalize=True)
    torch.testing.assert_close(ours.encode(prompts)[2], reference, rtol=1e-5, atol=1e-6)


def test_pretrained_by_name_loads_a_local_weights_file(tmp_path):
    """The real-model path: a built-in open_clip architecture with a local weights file (no download)."""
    torch.manual_seed(1)
    model = open_clip.create_model("RN50")  # random weights, the real RN50 architecture
    weights = tmp_path / "rn50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    encoder = CLIPTextEncoder.from_open_clip("RN50", pretrained=str(weights))
    assert encoder.width == 512 and encoder.embed_dim == 1024 and encoder.context_length == 77
    prompts = ["a photo of a cat"]
    with torch.no_grad():
        reference = model.eval().encode_text(open_clip.tokenize(prompts), normalize=True)
    torch.testing.assert_close(encoder.encode(prompts)[2], reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prompts", [[], "a circle", [""] * 0, [1, 2], None])
def test_bad_prompts_raise(prompts):
    encoder = CLIPTextEncoder(**CLIPTextEncoder.tiny_config())
    with pytest.raises(TextEncoderError):
        encoder.encode(prompts)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": MODEL_CFG}))
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(TextEncoderError, match="safetensors"):
        CLIPTextEncoder.from_open_clip(tmp_path)


def test_unknown_name_and_bad_config_raise(tmp_path):
    with pytest.raises(TextEncoderError, match="neither"):
        CLIPTextEncoder.from_open_clip("no-such-model")
    with pytest.raises(TextEncoderError, match="pretrained"):
        CLIPTextEncoder.from_open_clip("RN50")
    (tmp_path / OPEN_CLIP_CONFIG).write_text("{not json")
    with pytest.raises(TextEncoderError, match="JSON"):
        CLIPTextEncoder.from_open_clip(tmp_path)
