"""`lingen generate --search`: best-of-N and tournaments over seeds, with a tiny random pipeline and CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genmodels.cli import main as cli_main
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_image_pipeline

PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t2i") / "model"
    tiny_text_to_image_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_open_clip(tmp_path_factory.mktemp("clip") / "clip")


def run(*argv) -> int:
    try:
        return cli_main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def search(model_dir, out, *extra, prompts=PROMPTS):
    return run("generate", "--model", model_dir, *[x for p in prompts for x in ("--prompt", p)], "--steps", 2,
               "--seed", 10, *extra, "--out", out)


def test_best_of_n_writes_the_argmax_with_scores_nfe_and_a_plot(model_dir, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(model_dir, out, "--search", "best-of-n", "--n", 3, "--clip", clip_dir, "--save-candidates",
                  "--batch-size", 2) == 0
    rows = manifest(out)
    assert [r["index"] for r in rows] == [0, 1] and [r["prompt"] for r in rows] == PROMPTS
    for i, r in enumerate(rows):
        assert r["search"] == "best-of-n" and r["verifier"] == "clip" and r["verifier_is_oracle"] is False
        assert r["candidate_seeds"] == [10 + 3 * i + j for j in range(3)]
        assert len(r["scores"]) == 3 and r["chosen"] == int(np.argmax(r["scores"]))
        assert r["seed"] == r["candidate_seeds"][r["chosen"]]
        assert r["nfe_per_candidate"] == [2, 2, 2] and r["nfe"] == 6 and r["comparisons"] == 0
        assert r["seconds"] >= 0
        assert r["candidate_files"] == [f"candidates/{i:04d}-{j:02d}.png" for j in range(3)]
        chosen = out / r["candidate_files"][r["chosen"]]
        assert (out / r["file"]).read_bytes() == chosen.read_bytes()
    assert (out / "score_vs_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tournament_takes_n_minus_1_comparisons_and_agrees_with_argmax(model_dir, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(model_dir, out, "--search", "tournament", "--n", 5, "--clip", clip_dir) == 0
    for r in manifest(out):
        assert r["comparisons"] == 4 and len(r["scores"]) == 5
        assert r["chosen"] == int(np.argmax(r["scores"]))
    assert not (out / "candidates").exists()


def test_one_candidate_reproduces_the_plain_run(model_dir, clip_dir, tmp_path):
    assert search(model_dir, tmp_path / "plain") == 0
    assert search(model_dir, tmp_path / "n1", "--search", "best-of-n", "--n", 1, "--clip", clip_dir) == 0
    for i in range(len(PROMPTS)):
        assert (tmp_path / "plain" / f"{i:04d}.png").read_bytes() == (tmp_path / "n1" / f"{i:04d}.png").read_bytes()
    assert [r["seed"] for r in manifest(tmp_path / "n1")] == [r["seed"] for r in manifest(tmp_path / "plain")]
    assert "search" not in manifest(tmp_path / "plain")[0]  # the plain manifest is unchanged


def test_oracle_verifier_is_marked_in_the_manifest(model_dir, tmp_path):
    out = tmp_path / "out"
    assert search(model_dir, out, "--search", "best-of-n", "--n", 2, "--verifier", "oracle") == 0
    for r in manifest(out):
        assert r["verifier_is_oracle"] is True and "evaluator" in r["verifier_warning"]
        assert set(r["scores"]) <= {0.0, 1.0}


def test_ensemble_verifier(model_dir, clip_dir, tmp_path):
    out = tmp_path / "out"
    assert search(model_dir, out, "--search", "best-of-n", "--n", 3, "--verifier", "ensemble",
                  "--clip", clip_dir, prompts=PROMPTS[:1]) == 0
    (row,) = manifest(out)
    assert row["verifier"] == "ensemble" and len(row["scores"]) == 3 and row["chosen"] == np.argmax(row["scores"])


@pytest.mark.parametrize("extra, message", [
    (["--n", 3], "--n 3 needs --search"),
    (["--search", "best-of-n", "--n", 0], "--n must be"),
    (["--search", "best-of-n", "--clip", "nowhere"], "not an open_clip folder"),
    (["--search", "best-of-n", "--verifier", "oracle", "--prompt", "a purple elephant"], "shapes-world captions"),
])
def test_search_errors_exit_2_and_write_nothing(model_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert search(model_dir, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("lingen: error:") and message in err and "Traceback" not in err
    assert not out.exists()
