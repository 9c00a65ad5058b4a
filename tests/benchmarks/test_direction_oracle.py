"""benchmarks/direction_oracle.py: the oracle direction code, and the fine-tune + measurement on a tiny pipeline."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import direction_dependence as dd
from benchmarks import direction_oracle as oracle
from tests.search.helpers import tiny_text_to_video_pipeline


def test_direction_code_is_a_scaled_one_hot_of_the_first_objects_motion():
    captions = ["a red circle moves to the left", "a blue square stays still",
                "a video of a green triangle moving up and a red square moving left"]
    code = oracle.direction_code(captions, 8, 0.5)
    assert code.shape == (3, 8)
    assert code.nonzero().tolist() == [[0, 0], [1, 4], [2, 2]] and set(code[code != 0].tolist()) == {0.5}
    reversed_code = oracle.direction_code([dd.reverse_direction(c) for c in captions], 8, 0.5)
    assert reversed_code.nonzero().tolist() == [[0, 1], [1, 4], [2, 3]]
    with pytest.raises(ValueError, match="needs 5"):
        oracle.direction_code(captions, 4, 1.0)


def test_the_code_reaches_the_model_through_the_pooled_text():
    pipe = tiny_text_to_video_pipeline()
    with torch.no_grad():  # only the pooled path carries text: then only the code tells the directions apart
        for p in pipe.transformer.caption_embedder.parameters():
            p.zero_()
    kwargs = dict(items=3, times=(0.9,), given=(1,))
    zero = dd.direction_dependence(pipe, **kwargs, pooled_code=lambda c: torch.zeros(len(c), 32))
    assert zero == dd.direction_dependence(pipe, **kwargs)
    coded = dd.direction_dependence(pipe, **kwargs, pooled_code=lambda c: oracle.direction_code(c, 32, 1.0))
    assert coded[1][0.9]["reversed_gap"] != zero[1][0.9]["reversed_gap"]


def test_fine_tune_with_the_code_then_measure(tmp_path):
    pipe = tiny_text_to_video_pipeline()
    pipe.save_pretrained(tmp_path / "init")
    out = oracle.main(["--init", str(tmp_path / "init"), "--text-encoder", str(tmp_path / "init" / "text_encoder"),
                       "--output-dir", str(tmp_path / "run"), "--steps", "2", "--items", "2",
                       "--json", str(tmp_path / "r.json")])
    assert out["steps"] == 2 and set(out["results"]) == {0, 1}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 2
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"]["1"]["0.9"]["reversed_gap"] == out["results"][1][0.9]["reversed_gap"]
    with pytest.raises(SystemExit, match="--steps"):
        oracle.main(["--output-dir", str(tmp_path / "x"), "--steps", "1"])
