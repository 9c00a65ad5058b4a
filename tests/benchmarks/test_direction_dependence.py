"""benchmarks/direction_dependence.py on a tiny random 8-frame 32×32 text-to-video pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import direction_dependence as dd
from tests.search.helpers import tiny_text_to_video_pipeline


def test_moving_clips_are_moving_single_object_validation_clips():
    x0, captions = dd.moving_clips(6, 32, 8)
    assert x0.shape == (6, 3, 8, 32, 32) and len(captions) == 6
    assert all(dd.reverse_direction(c) != c for c in captions)  # each names a direction
    assert all((x0[i, :, 0] - x0[i, :, 4]).abs().max() > 0 for i in range(6))  # the object moved


def test_errors_and_gaps_per_given_frames_and_time(tmp_path):
    pipe = tiny_text_to_video_pipeline()
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    out = dd.main(["--model", str(folder), "--items", "4", "--times", "0.5", "0.9", "--given", "0", "1",
                   "--json", str(tmp_path / "r.json")])
    rows = out[str(folder)]
    assert set(rows) == {0, 1} and set(rows[0]) == {0.5, 0.9}
    for k in (0, 1):
        for r in rows[k].values():
            assert r["true"] > 0 and r["reversed"] > 0 and r["null"] > 0
            assert r["reversed_gap"] == pytest.approx(r["reversed"] / r["true"] - 1, abs=1e-4)
    assert rows[0][0.9]["true"] != rows[1][0.9]["true"]  # the given frame changes the input
    assert json.loads((tmp_path / "r.json").read_text())["items"] == 4


def test_a_model_that_ignores_its_text_has_no_gap():
    pipe = tiny_text_to_video_pipeline()
    with torch.no_grad():  # cut the text off: the caption embedder outputs zeros, the pooled path is zeroed
        for p in list(pipe.transformer.caption_embedder.parameters()) + list(
                pipe.transformer.pooled_embedder.parameters()):
            p.zero_()
    rows = dd.direction_dependence(pipe, items=3, times=(0.9,), given=(0,))
    assert rows[0][0.9]["reversed_gap"] == 0 and rows[0][0.9]["null_gap"] == 0


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="--items"):
        dd.main(["--items", "0"])
    with pytest.raises(SystemExit, match="every time"):
        dd.main(["--times", "1.0"])
    with pytest.raises(SystemExit, match="--given"):
        dd.main(["--model", "assets/moving-shapes-dim", "--items", "2", "--given", "8"])


def test_swapped_binding_clips_hold_the_same_words():
    x0, captions, swapped = dd.swapped_clips(4, 32, 8, "colour")
    assert x0.shape == (4, 3, 8, 32, 32) and len(captions) == len(swapped) == 4
    for a, b in zip(captions, swapped):
        assert a != b and sorted(a.split()) == sorted(b.split())  # the same words, bound the other way


def test_binding_gap_on_a_tiny_model(tmp_path):
    pipe = tiny_text_to_video_pipeline()
    rows = dd.direction_dependence(pipe, items=3, times=(0.9,), given=(0,), wrong="motion")
    r = rows[0][0.9]
    assert r["reversed"] != r["true"] and r["reversed_gap"] == pytest.approx(r["reversed"] / r["true"] - 1, abs=1e-4)
    with pytest.raises(ValueError, match="wrong must be"):
        dd.direction_dependence(pipe, items=1, times=(0.9,), given=(0,), wrong="size")
