"""benchmarks/shapes_search.py on a tiny random pipeline and two tiny CLIPs: the candidate pool is sampled once,
cached, and scored by every verifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import shapes_search
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_image_pipeline


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    tiny_text_to_image_pipeline().save_pretrained(root / "pipe")
    save_tiny_open_clip(root / "clip-a")
    b = save_tiny_open_clip(root / "clip-b")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(b / "open_clip_model.safetensors"))  # a second, different verifier
    save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()},
              str(b / "open_clip_model.safetensors"))
    return root


def _run(folders, tmp_path, *extra):
    return shapes_search.main(["--model", str(folders / "pipe"), "--clip", str(folders / "clip-a"),
                               "--clip", str(folders / "clip-b"), "--per-category", "1", "--n", "4",
                               "--steps", "2", "--batch-size", "4", "--pool", str(tmp_path / "pool.npz"), *extra])


def test_pool_is_cached_and_scored_by_every_verifier(folders, tmp_path, monkeypatch):
    first = _run(folders, tmp_path, "--json", str(tmp_path / "r.json"))
    assert set(first["verifiers"]) == {str(folders / "clip-a"), str(folders / "clip-b")}
    a, b = (first["verifiers"][str(folders / name)] for name in ("clip-a", "clip-b"))
    assert first["best_of_n_clip_expected"] == a["best_of_n_clip_expected"]  # the first --clip is the headline
    assert a["ks"] == [1, 2, 4] and a["tournament_winner_equals_argmax"]
    # N = 1 is the single sample whatever the verifier; coverage is the verifiers' ceiling
    assert a["best_of_n_clip_expected"][0] == pytest.approx(b["best_of_n_clip_expected"][0])
    assert all(v <= c + 1e-9 for v, c in zip(a["best_of_n_clip_expected"], first["coverage_geneval"]))
    assert a["within_prompt_auc"] is None or 0.0 <= a["within_prompt_auc"] <= 1.0
    with np.load(tmp_path / "pool.npz") as pool:
        assert pool["images"].shape[:2] == (6, 4) and pool["images"].dtype == np.uint8
    # the second run samples nothing: the pipeline is never loaded
    monkeypatch.setattr(shapes_search, "load_pipeline", lambda *a, **k: pytest.fail("sampled again"))
    again = _run(folders, tmp_path)
    assert again["verifiers"] == first["verifiers"] and again["seconds"] == first["seconds"]


def test_a_pool_made_with_other_settings_is_not_reused(folders, tmp_path):
    _run(folders, tmp_path)
    other = _run(folders, tmp_path, "--steps", "3")
    with np.load(tmp_path / "pool.npz") as pool:
        assert '"steps": 3' in str(pool["settings"])
    assert other["settings"]["steps"] == 3


def test_the_generator_can_verify_its_own_candidates(folders, tmp_path):
    _run(folders, tmp_path)  # make the pool
    result = _run(folders, tmp_path, "--self-verifier", "0.5:1")
    own = result["verifiers"][f"self:{folders / 'pipe'}"]
    assert own["forward_passes"] == 6 * 4 * 2  # 6 prompts × 4 candidates × (null + prompt) × 1 level × 1 draw
    assert own["ks"] == [1, 2, 4] and own["tournament_winner_equals_argmax"]
    assert own["best_of_n_clip_expected"][0] == pytest.approx(result["best_of_n_clip_expected"][0])
    with pytest.raises(SystemExit):
        shapes_search.parse_args(["--self-verifier", "0.5"])


def test_a_diverging_candidate_is_a_black_failure_and_the_others_are_kept(folders, tmp_path, monkeypatch, capsys):
    for name in ("clean", "diverging"):
        (tmp_path / name).mkdir()
    _run(folders, tmp_path / "clean")
    real_load = shapes_search.load_pipeline
    first_seed = shapes_search.load_eval_set()[0]["seed"]  # the first single-object prompt's seed

    class Diverging:
        """The real pipeline, except that candidate 2 of the first prompt raises like a NaN would."""

        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __call__(self, *args, generator, **kwargs):
            if any(g.initial_seed() == first_seed + 2 for g in generator):
                raise FloatingPointError("the model produced NaN or infinite values; no image was made")
            return self.pipe(*args, generator=generator, **kwargs)

    monkeypatch.setattr(shapes_search, "load_pipeline", lambda *a, **k: Diverging(real_load(*a, **k)))
    _run(folders, tmp_path / "diverging")
    assert "1 candidate(s) diverged" in capsys.readouterr().out
    with np.load(tmp_path / "clean" / "pool.npz") as a, np.load(tmp_path / "diverging" / "pool.npz") as b:
        assert not b["images"][0, 2].any() and not b["correct"][0, 2]
        keep = np.ones(a["images"].shape[:2], bool)
        keep[0, 2] = False
        assert np.array_equal(a["images"][keep], b["images"][keep])
