"""Inpainting metrics on hand-built rolls."""

from __future__ import annotations

import numpy as np
import pytest

from genmodels.eval.music_metrics import (
    duration_histogram,
    estimate_key,
    histogram_overlap,
    in_key_ratio,
    key_name,
    note_density,
    notes_in_mask,
    onset_grid_alignment,
    pitch_class_histogram,
    random_fill,
)
from genmodels.music.roll import MODEL_THRESHOLD, RollNotes, notes_to_roll, roll_notes


def roll_of(notes: list[tuple[int, int, int]], width: int = 32, velocity: int = 100) -> np.ndarray:
    """Roll from (pitch, start, duration) notes in 16ths."""
    p, s, d = (np.array(a, dtype=np.int64) for a in zip(*notes))
    return notes_to_roll(RollNotes(p, s, s + d, np.full(p.size, velocity)), width)


def columns_mask(width: int, start: int, end: int) -> np.ndarray:
    mask = np.zeros((64, width), dtype=bool)
    mask[:, start:end] = True
    return mask


# C major melody: C D E F G A B C' in 8ths over columns 0..15, then C E G in 16ths / quarters from column 16.
MELODY = [(60, 0, 2), (62, 2, 2), (64, 4, 2), (65, 6, 2), (67, 8, 2), (69, 10, 2), (71, 12, 2), (72, 14, 2)]
SECOND_HALF = [(60, 16, 4), (64, 17, 1), (67, 20, 4), (66, 24, 16)]


@pytest.fixture
def roll() -> np.ndarray:
    return roll_of(MELODY + SECOND_HALF)


@pytest.fixture
def mask() -> np.ndarray:
    return columns_mask(32, 16, 32)


def test_notes_in_mask_counts_onsets_inside_the_mask(roll, mask):
    assert notes_in_mask(roll, mask) == 4
    assert notes_in_mask(roll, columns_mask(32, 3, 7)) == 2  # onsets at 4 and 6; the note at 2 sustains in
    assert notes_in_mask(roll, np.zeros_like(mask)) == 0


def test_note_density_is_onsets_per_masked_cell(roll, mask):
    assert note_density(roll, mask) == 4 / (64 * 16)
    assert note_density(roll, np.zeros_like(mask)) == 0.0


def test_pitch_class_histogram_counts_each_onset_once(roll, mask):
    h = pitch_class_histogram(roll, mask)
    expected = np.zeros(12)
    expected[[0, 4, 6, 7]] = 0.25
    np.testing.assert_array_equal(h, expected)
    assert not pitch_class_histogram(roll, np.zeros_like(mask)).any()


def test_duration_histogram_bins_durations_and_clips_long_notes(roll, mask):
    # durations 4, 1, 4 and 16 (clipped to the mask's edge: it lasts 16 columns, the roll ends at 32)
    h = duration_histogram(roll, mask, max_len=8)
    expected = np.zeros(8)
    expected[0], expected[3], expected[7] = 0.25, 0.5, 0.25
    np.testing.assert_array_equal(h, expected)


def test_histogram_overlap_is_one_for_identical_and_zero_for_disjoint_or_empty():
    a, b = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    assert histogram_overlap(a, a) == 1.0
    assert histogram_overlap(a, b) == 0.5
    assert histogram_overlap(a, np.array([0.0, 0.0, 1.0])) == 0.0
    assert histogram_overlap(a, np.zeros(3)) == 0.0
    assert histogram_overlap(np.array([2.0, 2.0, 0.0]), a) == 1.0  # inputs are normalised first
    with pytest.raises(ValueError, match="same shape"):
        histogram_overlap(a, np.ones(4))


def test_estimate_key_finds_major_and_minor_keys():
    assert estimate_key(roll_of(MELODY)) == (0, "major")
    a_minor = [(57, 0, 4), (60, 4, 2), (64, 6, 2), (69, 8, 4)]
    a_minor += [(68, 12, 2), (71, 14, 2), (72, 16, 4), (69, 20, 8)]
    assert key_name(estimate_key(roll_of(a_minor))) == "A minor"
    assert estimate_key(np.zeros((2, 64, 8), dtype=np.float32)) is None


def test_in_key_ratio_counts_masked_onsets_in_the_estimated_key(roll, mask):
    # key of the whole roll is C major; masked pitch classes C, E, G are in it, F# is not
    assert estimate_key(roll) == (0, "major")
    assert in_key_ratio(roll, mask) == 0.75
    assert in_key_ratio(roll, mask, key=(7, "major")) == 1.0  # G major has F#
    assert in_key_ratio(roll, np.zeros_like(mask)) == 0.0


def test_onset_grid_alignment_is_the_share_of_onsets_on_even_columns(roll, mask):
    assert onset_grid_alignment(roll, mask) == 0.75  # onsets at 16, 17, 20, 24
    assert onset_grid_alignment(roll, columns_mask(32, 0, 16)) == 1.0
    assert onset_grid_alignment(roll, np.zeros_like(mask)) == 0.0


def test_metrics_accept_a_model_threshold():
    roll = roll_of(MELODY) * 0.9 + 0.1  # a noisy background everywhere
    mask = columns_mask(32, 0, 32)
    assert notes_in_mask(roll, mask, threshold=MODEL_THRESHOLD) == 8
    assert onset_grid_alignment(roll, mask, threshold=MODEL_THRESHOLD) == 1.0


def test_random_fill_matches_the_context_density_and_keeps_the_context():
    context = roll_of(MELODY, width=64)  # 8 onsets in 64 x 32 unmasked cells
    mask = columns_mask(64, 32, 64)
    filled = random_fill(context, mask, np.random.default_rng(0))
    assert notes_in_mask(filled, mask) == round(8 / (64 * 32) * (64 * 32))
    np.testing.assert_array_equal(filled[:, :, :32], context[:, :, :32])
    notes = roll_notes(filled)
    inside = notes.start >= 32
    assert set(notes.duration[inside]) <= {1, 2} and set(notes.velocity[inside]) == {100}


def test_random_fill_uses_an_explicit_density_and_stays_inside_the_mask():
    context = roll_of(MELODY, width=32)
    mask = np.zeros((64, 32), dtype=bool)
    mask[10:20, 8:24] = True  # 160 cells
    rng = np.random.default_rng(1)
    filled = random_fill(context, mask, rng, density=0.1)
    assert notes_in_mask(filled, mask) == 16
    changed = np.any(filled != context, axis=0)
    assert not changed[~mask].any()
    a = random_fill(context, mask, np.random.default_rng(7), density=0.1)
    b = random_fill(context, mask, np.random.default_rng(7), density=0.1)
    np.testing.assert_array_equal(a, b)


def test_mask_shape_is_checked(roll):
    with pytest.raises(ValueError, match="mask must have shape"):
        notes_in_mask(roll, np.ones((64, 8), dtype=bool))


def test_random_fill_never_copies_durations_from_inside_the_mask():
    # context notes are 16ths; the masked truth holds only whole-bar notes, which must not leak into the fill
    truth = roll_of([(60, 0, 1), (62, 1, 1), (64, 2, 1), (70, 32, 16), (72, 48, 16)], width=64)
    mask = columns_mask(64, 32, 64)
    filled = random_fill(truth, mask, np.random.default_rng(0), density=0.01)
    inside = roll_notes(filled).start >= 32
    assert set(roll_notes(filled).duration[inside]) == {1}


def test_random_fill_uniform_durations():
    context = roll_of(MELODY, width=64)
    mask = columns_mask(64, 0, 64)
    filled = random_fill(context, mask, np.random.default_rng(3), density=0.02, durations="uniform", max_duration=4)
    d = roll_notes(filled).duration
    assert d.min() >= 1 and d.max() <= 4 and len(set(d)) > 1
    with pytest.raises(ValueError, match="durations"):
        random_fill(context, mask, np.random.default_rng(3), durations="gaussian")
