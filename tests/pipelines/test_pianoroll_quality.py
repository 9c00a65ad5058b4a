"""The shipped piano-roll model against its baselines on held-out pieces (guards the BENCHMARKS.md margin).

Same protocol as ``benchmarks/pianoroll_eval.py`` at a smaller size: held-out 8-bar windows, bars 3–6 masked
over all pitches, filled by the trained model, by the same architecture untrained, and by random notes at the
ground truth's density (uniform durations of 1–16 sixteenths). The trained model must beat both baselines on
pitch-class and duration histogram overlap with the ground truth by a clear margin.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from benchmarks.pianoroll_eval import heldout_windows, region_scores, run_model
from genmodels.eval import music_metrics as mm
from genmodels.io import ASSETS_DIR
from genmodels.loading import load_pipeline
from genmodels.music.roll import STEPS_PER_BAR
from genmodels.pipelines import PianoRollInpaintPipeline

MODEL = ASSETS_DIR / "pianoroll-hdit"
MARGIN = 0.05


@pytest.fixture(scope="module")
def scores():
    assert (MODEL / "model_index.json").is_file(), f"the shipped model {MODEL} is missing (make assets-pianoroll)"
    pipe = load_pipeline(PianoRollInpaintPipeline, MODEL)
    torch.manual_seed(0)
    untrained = PianoRollInpaintPipeline(
        transformer=type(pipe.transformer).from_config(pipe.transformer.config).eval(), scheduler=pipe.scheduler)
    rolls, _ = heldout_windows(8, seed=1)
    mask = np.zeros(rolls.shape[2:], dtype=bool)
    mask[:, 2 * STEPS_PER_BAR: 6 * STEPS_PER_BAR] = True
    rng = np.random.default_rng(1)
    outputs = {
        "trained": run_model(pipe, rolls, mask, 16, 2, seed=1, batch=8),
        "untrained": run_model(untrained, rolls, mask, 16, 2, seed=1, batch=8),
        "random": np.stack([mm.random_fill(r, mask, rng, density=mm.note_density(r, mask), durations="uniform")
                            for r in rolls]),
    }
    return {name: {key: statistics.fmean(region_scores(o, t, mask)[key] for o, t in zip(out, rolls))
                   for key in ("pitch_class_overlap", "duration_overlap")}
            for name, out in outputs.items()}


@pytest.mark.parametrize("metric", ["pitch_class_overlap", "duration_overlap"])
@pytest.mark.parametrize("baseline", ["untrained", "random"])
def test_trained_model_beats_baseline_by_a_margin(scores, metric, baseline):
    assert scores["trained"][metric] >= scores[baseline][metric] + MARGIN, scores
