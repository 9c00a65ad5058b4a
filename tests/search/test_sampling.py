"""Repeated sampling, NFE bookkeeping and the run_search dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from genmodels.search import (
    Verifier,
    pianoroll_generate_fn,
    run_search,
    sample_candidates,
    text_to_image_generate_fn,
)
from tests.search.helpers import tiny_text_to_image_pipeline


def toy_generate(seeds):
    """Output = seed squared mod 11; 10 denoiser calls per batched call."""
    return [(s * s) % 11 for s in seeds], 10


class Identity(Verifier):
    def _score(self, outputs, context):
        return outputs


@pytest.mark.parametrize("batch_size, calls", [(None, 10), (1, 70), (3, 30)])
def test_nfe_per_candidate_whatever_the_batching(batch_size, calls):
    cands = sample_candidates(toy_generate, 7, seeds=range(20, 27), batch_size=batch_size)
    assert cands.outputs == [(s * s) % 11 for s in range(20, 27)] and cands.seeds == list(range(20, 27))
    assert cands.nfe.tolist() == [10] * 7 and cands.total_nfe == 70
    assert cands.batched_calls == calls


def test_seed_count_must_match():
    with pytest.raises(ValueError, match="one seed per candidate"):
        sample_candidates(toy_generate, 3, seeds=[1, 2])


@pytest.mark.parametrize("strategy", ["best-of-n", "tournament"])
def test_search_picks_the_best_and_records_everything(strategy):
    result = run_search(strategy, verifier=Identity(), generate_fn=toy_generate, n=6, seed=1, batch_size=4)
    values = [(s * s) % 11 for s in range(1, 7)]  # 1 4 9 5 3 3
    assert result.scores.tolist() == values
    assert result.index == 2 and result.seed == 3 and result.output == 9
    assert result.nfe == 60 and result.nfe_per_candidate.tolist() == [10] * 6
    assert result.comparisons == (5 if strategy == "tournament" else 0)


@pytest.mark.parametrize("strategy", ["best-of-n", "tournament"])
def test_drafts_select_and_the_chosen_seed_is_drawn_in_full(strategy):
    drawn = []

    def full(seeds):
        drawn.append(list(seeds))
        return [("full", s) for s in seeds], 25

    result = run_search(strategy, verifier=Identity(), generate_fn=toy_generate, n=6, seed=1, final_fn=full)
    assert result.scores.tolist() == [1, 4, 9, 5, 3, 3] and result.seed == 3 and drawn == [[3]]
    assert result.output == ("full", 3) and result.candidates.outputs[2] == 9  # the draft stays a candidate
    assert result.nfe == 6 * 10 + 25 and result.final_nfe == 25
    for other in ("none", "tree-of-frames"):
        with pytest.raises(ValueError, match="final_fn"):
            run_search(other, verifier=Identity(), generate_fn=toy_generate, final_fn=full)


def test_drafts_with_several_finals_keep_the_best_full_draw():
    def full(seeds):  # the full draw ranks differently from its draft: seed 1 is best in full
        return [("full", s) for s in seeds], 25

    class FullAware(Verifier):
        def _score(self, outputs, context):
            return [(10 - o[1]) if isinstance(o, tuple) else o for o in outputs]

    # drafts 1 4 9 5 3 3 (seeds 1..6): the 3 best are seeds 3, 4, 2; in full, seed 2 scores best (10 - 2)
    result = run_search("best-of-n", verifier=FullAware(), generate_fn=toy_generate, n=6, seed=1, final_fn=full,
                        final_k=3)
    assert result.final_seeds == [2, 3, 4] and result.final_scores.tolist() == [8, 7, 6]
    assert result.output == ("full", 2) and result.seed == 2 and result.index == 1
    assert result.nfe == 6 * 10 + 3 * 25 and result.final_nfe == 75
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="final_k"):
            run_search("best-of-n", verifier=FullAware(), generate_fn=toy_generate, final_fn=full, final_k=bad)
    for kwargs in ({"final_k": 2}, {"final_k": 2, "final_fn": full, "strategy": "tournament"}):
        with pytest.raises(ValueError, match="final_k"):
            run_search(kwargs.pop("strategy", "best-of-n"), verifier=FullAware(), generate_fn=toy_generate, n=3,
                       **kwargs)


def test_search_none_is_one_plain_sample():
    result = run_search("none", generate_fn=toy_generate, n=8, seed=4)
    assert result.output == 5 and result.seed == 4 and result.nfe == 10 and len(result.scores) == 0
    with pytest.raises(ValueError, match="unknown search"):
        run_search("beam", generate_fn=toy_generate)
    with pytest.raises(ValueError, match="verifier"):
        run_search("best-of-n", generate_fn=toy_generate, n=2)


def test_text_to_image_candidates_do_not_depend_on_the_batch():
    pipe = tiny_text_to_image_pipeline()
    fn = text_to_image_generate_fn(pipe, "a red circle", num_inference_steps=2, guidance_scale=3.0)
    one = sample_candidates(fn, 3, seeds=[5, 6, 7], batch_size=1)
    all_ = sample_candidates(fn, 3, seeds=[5, 6, 7], batch_size=3)
    for a, b in zip(one.outputs, all_.outputs):
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(one.outputs[0], one.outputs[1])
    assert one.nfe.tolist() == all_.nfe.tolist() == [2] * 3  # one CFG-batched call per step
    assert one.batched_calls == 6 and all_.batched_calls == 2


def test_pianoroll_candidates_keep_the_known_cells():
    import torch

    from genmodels.diffusion.sampling import make_edm_scheduler
    from genmodels.hdit import HDiT
    from genmodels.pipelines import PianoRollInpaintPipeline

    torch.manual_seed(0)
    pipe = PianoRollInpaintPipeline(transformer=HDiT(**{**HDiT.tiny_config(), "sample_size": [64, 32]}).eval(),
                                    scheduler=make_edm_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    roll = np.zeros((2, 64, 32), np.float32)
    roll[:, 30, 0:4] = 90 / 127
    mask = np.zeros((64, 32), bool)
    mask[:, 16:] = True
    fn = pianoroll_generate_fn(pipe, roll, mask, num_inference_steps=3, repaint=2)
    cands = sample_candidates(fn, 3, seeds=[0, 1, 2], batch_size=2)
    assert len(cands) == 3 and cands.nfe.tolist() == [6] * 3 and cands.batched_calls == 12
    for c in cands.outputs:
        assert c.shape == (2, 64, 32) and np.array_equal(c[:, ~mask], roll[:, ~mask])
