"""genmodels/text/binding.py (attribute-pair labels, swapped twins) and training/train_text_binding.py."""

from __future__ import annotations

import json

import pytest
import torch

from genmodels.text import CLIPTextEncoder
from genmodels.text.binding import LABELS, binding_labels, binding_targets, caption_objects, swapped_caption
from training import train_text_binding
from training.train_dit import load_text_encoder


def names(caption: str) -> set[tuple[str, str, str, str]]:
    return {LABELS[i] for i in binding_labels(caption)}


def test_labels_bind_attributes_to_their_own_object():
    labels = names("a green circle moving right and a blue triangle moving downwards")
    assert ("shape", "circle", "colour", "green") in labels and ("shape", "triangle", "colour", "blue") in labels
    assert ("shape", "circle", "motion", "right") in labels and ("colour", "blue", "motion", "down") in labels
    assert ("shape", "circle", "colour", "blue") not in labels
    assert ("shape", "triangle", "colour", "green") not in labels
    assert len(labels) == 6  # 3 kind pairs per object, no size stated
    swapped = names("a blue circle moving right and a green triangle moving downwards")
    assert swapped != labels and len(swapped & labels) == 2  # only the shape–motion pairs survive a colour swap


def test_labels_of_still_captions_count_only_stated_attributes():
    assert names("a red circle to the left of a square") == {("shape", "circle", "colour", "red")}
    assert names("a small circle") == {("shape", "circle", "size", "small")}
    assert binding_labels("three blue squares") == binding_labels("a blue square")
    assert caption_objects("a cat on a mat") == [] and binding_labels("a cat on a mat") == []
    targets = binding_targets(["a red circle", "a cat on a mat"])
    assert targets.shape == (2, len(LABELS)) and targets[0].sum() == 1 and targets[1].sum() == 0


def test_swapped_twin_keeps_the_words_and_changes_the_binding():
    spec = {"category": "two", "frames": 8, "size": 32, "objects": [
        {"shape": "circle", "colour": "red", "motion": "left", "size": "large"},
        {"shape": "square", "colour": "blue", "motion": "up", "size": "large"}]}
    for kind in ("colour", "motion", "shape"):
        a, b = swapped_caption(spec, kind, template_seed=3)
        assert a != b and set(binding_labels(a)) != set(binding_labels(b))
        assert swapped_caption(spec, kind, template_seed=3) == (a, b)  # deterministic wording
    a, b = swapped_caption(spec, "colour", template_seed=3)
    assert "red circle" in a and "blue circle" in b and "blue square" in a and "red square" in b
    same_colour = {**spec, "objects": [dict(spec["objects"][0]), {**spec["objects"][1], "colour": "red"}]}
    assert swapped_caption(same_colour, "colour", 0) is None
    assert swapped_caption({**spec, "objects": spec["objects"][:1]}, "colour", 0) is None
    a, b = swapped_caption(same_colour, "shape", 0)  # the shapes trade motions: a real change of binding
    assert set(binding_labels(a)) != set(binding_labels(b))
    same_motion = {**spec, "objects": [dict(spec["objects"][0]), {**spec["objects"][1], "motion": "left"}]}
    assert swapped_caption(same_motion, "motion", 0) is None


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("binding") / "encoder"
    torch.manual_seed(0)
    CLIPTextEncoder(**CLIPTextEncoder.tiny_config()).save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_train_text_binding_learns_and_stays_near_its_start(tiny_encoder, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "bound"
    metrics = train_text_binding.main(["--init", str(tiny_encoder), "--output-dir", str(out), "--max-steps", "40",
                                       "--batch-size", "32", "--lr", "3e-3", "--val-captions", "20",
                                       "--word-loss", "0", "--log-every", "10"])
    assert metrics["val"]["bind"] < 0.8 * metrics["val_before"]["bind"]
    assert metrics["pooled_cosine_to_init"] > 0.5 and 0 < metrics["token_change_to_init"] < 1
    assert set(metrics["swap_cosine"]) == {"colour", "motion", "shape"}
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40
    assert len((tmp_path / "bound.log.jsonl").read_text().splitlines()) == 5  # step 1, then every 10
    trained, start = load_text_encoder(str(out)), load_text_encoder(str(tiny_encoder))
    prompts = ["a red circle moving left and a blue square moving up"]
    assert not torch.equal(trained.encode(prompts)[2], start.encode(prompts)[2])
    assert not any(p.requires_grad for p in trained.parameters())


@pytest.mark.parametrize("flags, message", [
    (["--bind-loss", "0", "--word-loss", "0"], "nothing to train"),
    (["--anchor-pooled", "-1"], "--anchor-pooled"),
    (["--two-share", "1.5"], "--two-share"),
    (["--max-steps", "0"], "≥ 1"),
])
def test_bad_arguments_are_refused(tiny_encoder, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        train_text_binding.main(["--init", str(tiny_encoder), "--output-dir", str(tmp_path / "x"), *flags])
    assert not (tmp_path / "x").exists()
