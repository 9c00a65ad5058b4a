"""benchmarks/caption_sensitivity.py on the shipped tiny CLIP and on a test double that ignores one word."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import caption_sensitivity as cs


class BagOfColours:
    """Test double: pooled vector and tokens depend only on the colour words of the caption."""

    COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")

    def encode(self, prompts):
        rows = []
        for prompt in prompts:
            words = prompt.split()
            rows.append(torch.stack([torch.eye(8)[self.COLOURS.index(w)] if w in self.COLOURS else torch.full((8,), 0.1)
                                     for w in words] + [torch.zeros(8)] * (12 - len(words))))
        tokens = torch.stack(rows)
        mask = torch.tensor([[i < len(p.split()) for i in range(12)] for p in prompts])
        pooled = torch.nn.functional.normalize(tokens.sum(1), dim=-1)
        return tokens, mask, pooled


def test_an_encoder_blind_to_a_kind_of_word_scores_one_and_zero_there():
    r = cs.caption_sensitivity(BagOfColours())
    for kind in ("shape", "relation", "direction"):
        assert r[kind]["pooled_cosine"] == pytest.approx(1.0) and r[kind]["token_change"] == 0
    assert r["colour"]["pooled_cosine"] < 0.9 and r["colour"]["token_change"] > 0.5
    assert r["direction"]["pairs"] == len(cs.PAIRS["direction"])


def test_the_shipped_clip_on_every_kind(tmp_path):
    out = cs.main(["--json", str(tmp_path / "r.json")])["assets/clip-shapes"]
    assert set(out) == set(cs.PAIRS)
    for r in out.values():
        assert -1 <= r["pooled_cosine"] <= 1 and r["token_change"] >= 0
    assert out["colour"]["pooled_cosine"] < out["relation"]["pooled_cosine"]  # colours seen, relations blurred
    assert json.loads((tmp_path / "r.json").read_text())["assets/clip-shapes"] == out


def test_a_missing_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="cannot load the text encoder"):
        cs.main(["--text-encoder", str(tmp_path / "nowhere")])
