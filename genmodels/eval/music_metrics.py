"""Metrics for piano-roll inpainting, computed on the generated (masked) region.

Inputs are rolls ``[2, 64, W]`` in the format of ``genmodels.music.roll`` (values in [0, 1], not the model's
[-1, 1]) and a mask ``[64, W]`` bool with True = generated. Notes are decoded with ``roll_notes`` at
``threshold`` (default ``EXACT_THRESHOLD``; pass ``MODEL_THRESHOLD`` for raw model samples). A note belongs to
the masked region when its onset cell is masked; durations are in 16th notes and may run past the mask.

- ``notes_in_mask``: number of onsets in the mask (Pictures of MIDI's "busyness"); ``note_density`` divides it
  by the number of masked cells.
- ``pitch_class_histogram`` (12 bins, one count per onset) and ``duration_histogram`` (bins 1..max_len 16ths,
  the last bin also holding longer notes), both normalised to sum 1, or all zeros when there is no note.
- ``histogram_overlap``: ``sum(min(h1, h2))`` of two normalised histograms, 1 = identical (the overlap-area
  style of Polyffusion's objective metrics); 0.0 when either histogram is empty.
- ``estimate_key`` (Krumhansl-Schmuckler on duration-weighted pitch classes), ``in_key_ratio`` and
  ``onset_grid_alignment`` (fraction of onsets on 8th-note columns); ratios are 0.0 when the mask has no
  onset, so an empty fill never scores well.
- ``random_fill``: the random-notes baseline, the mask filled with random notes at a reference density.
"""

from __future__ import annotations

import numpy as np

from genmodels.music.roll import (
    EXACT_THRESHOLD,
    ONSET,
    ROLL_PITCHES,
    SUSTAIN,
    RollNotes,
    check_roll,
    roll_notes,
)

# Krumhansl-Kessler key profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Scale degrees counted as in key. Minor adds the raised 7th (harmonic minor's leading tone) to natural minor,
# since tonal music in minor uses it all the time.
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _check_mask(mask: np.ndarray, roll: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (ROLL_PITCHES, roll.shape[2]):
        raise ValueError(f"mask must have shape [{ROLL_PITCHES}, {roll.shape[2]}], got {list(mask.shape)}")
    return mask.astype(bool, copy=False)


def masked_notes(roll: np.ndarray, mask: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> RollNotes:
    """The notes of ``roll`` whose onset cell is inside ``mask``."""
    roll = check_roll(roll)
    mask = _check_mask(mask, roll)
    notes = roll_notes(roll, threshold=threshold)
    keep = mask[notes.row, notes.start]
    return RollNotes(*(a[keep] for a in notes))


def notes_in_mask(roll: np.ndarray, mask: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> int:
    """Number of note onsets inside ``mask`` (PoM's busyness)."""
    return int(masked_notes(roll, mask, threshold=threshold).pitch.size)


def note_density(roll: np.ndarray, mask: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> float:
    """Onsets inside ``mask`` per masked cell (pitch x column); 0.0 for an empty mask."""
    cells = int(np.count_nonzero(mask))
    return notes_in_mask(roll, mask, threshold=threshold) / cells if cells else 0.0


def _normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(counts.shape, dtype=np.float64)


def pitch_class_histogram(roll: np.ndarray, mask: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> np.ndarray:
    """``[12]`` share of the masked onsets on each pitch class (C = 0); all zeros without onsets."""
    notes = masked_notes(roll, mask, threshold=threshold)
    return _normalised(np.bincount(notes.pitch % 12, minlength=12).astype(np.float64))


def duration_histogram(
    roll: np.ndarray, mask: np.ndarray, max_len: int = 16, *, threshold: float = EXACT_THRESHOLD
) -> np.ndarray:
    """``[max_len]`` share of masked notes lasting 1, 2, ..., ``max_len`` (or more) 16ths; zeros if none."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    notes = masked_notes(roll, mask, threshold=threshold)
    bins = np.clip(notes.duration, 1, max_len) - 1
    return _normalised(np.bincount(bins, minlength=max_len).astype(np.float64))


def histogram_overlap(h1: np.ndarray, h2: np.ndarray) -> float:
    """Overlap ``sum(min(h1, h2))`` after normalising each to sum 1; 0.0 if either is empty (all zeros)."""
    h1, h2 = np.asarray(h1, dtype=np.float64), np.asarray(h2, dtype=np.float64)
    if h1.shape != h2.shape:
        raise ValueError(f"histograms must have the same shape, got {list(h1.shape)} and {list(h2.shape)}")
    if np.any(h1 < 0) or np.any(h2 < 0):
        raise ValueError("histograms must be non-negative")
    if h1.sum() <= 0 or h2.sum() <= 0:
        return 0.0
    return float(np.minimum(h1 / h1.sum(), h2 / h2.sum()).sum())


def estimate_key(roll: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> tuple[int, str] | None:
    """Best (tonic pitch class, "major" | "minor") for the whole roll by Krumhansl-Schmuckler, None if silent.

    The pitch-class distribution is weighted by note duration; the key is the rotated Krumhansl-Kessler
    profile with the highest Pearson correlation (ties: major before minor, lower tonic first).
    """
    notes = roll_notes(roll, threshold=threshold)
    if notes.pitch.size == 0:
        return None
    weights = np.bincount(notes.pitch % 12, weights=notes.duration, minlength=12)
    if np.ptp(weights) == 0:  # every pitch class equally weighted: no key is better than another
        return 0, "major"
    best, best_key = -np.inf, (0, "major")
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(weights, np.roll(profile, tonic))[0, 1]
            if r > best + 1e-12:
                best, best_key = r, (tonic, mode)
    return best_key


def key_name(key: tuple[int, str]) -> str:
    """E.g. ``(9, "minor") -> "A minor"``."""
    return f"{PITCH_NAMES[key[0]]} {key[1]}"


def in_key_ratio(
    roll: np.ndarray,
    mask: np.ndarray,
    *,
    key: tuple[int, str] | None = None,
    threshold: float = EXACT_THRESHOLD,
) -> float:
    """Fraction of masked onsets whose pitch class is in ``key`` (default: ``estimate_key`` of the roll).

    In key means in ``MAJOR_SCALE`` / ``MINOR_SCALE`` above the tonic. 0.0 when the mask has no onset.
    """
    notes = masked_notes(roll, mask, threshold=threshold)
    if notes.pitch.size == 0:
        return 0.0
    key = key if key is not None else estimate_key(roll, threshold=threshold)
    tonic, mode = key
    scale = np.array(MAJOR_SCALE if mode == "major" else MINOR_SCALE)
    return float(np.isin((notes.pitch - tonic) % 12, scale).mean())


def onset_grid_alignment(roll: np.ndarray, mask: np.ndarray, *, threshold: float = EXACT_THRESHOLD) -> float:
    """Fraction of masked onsets on the 8th-note grid (even columns); 0.0 when the mask has no onset."""
    notes = masked_notes(roll, mask, threshold=threshold)
    if notes.start.size == 0:
        return 0.0
    return float(np.mean(notes.start % 2 == 0))


def random_fill(
    roll: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    density: float | None = None,
    *,
    durations: str = "context",
    max_duration: int = 16,
    threshold: float = EXACT_THRESHOLD,
) -> np.ndarray:
    """The random-notes baseline: ``roll`` with its masked cells replaced by random notes.

    ``density`` is onsets per masked cell (pitch x column); by default the onset density of ``roll`` outside
    the mask, or of the whole roll when the mask covers everything. ``round(density * mask cells)`` onsets are
    put on distinct masked cells drawn uniformly. ``durations="context"`` draws durations and velocities from
    the notes whose onset lies *outside* the mask (never from the masked region itself, which would leak the
    ground truth; a 16th at velocity 80 if there is none); ``durations="uniform"`` draws durations uniformly
    from 1..``max_duration`` 16ths at velocity 80. A note stops at the mask's edge or at the next onset in its
    row. Cells outside the mask are unchanged (notes crossing into the mask are cut at its edge).
    """
    if durations not in ("context", "uniform"):
        raise ValueError(f"durations must be 'context' or 'uniform', got {durations!r}")
    roll = check_roll(roll)
    mask = _check_mask(mask, roll)
    if density is None:
        reference = ~mask if not mask.all() else mask
        density = note_density(roll, reference, threshold=threshold)
    if density < 0:
        raise ValueError(f"density must be >= 0, got {density}")

    notes = roll_notes(roll, threshold=threshold)
    if not mask.all():
        outside = ~mask[notes.row, notes.start]
        notes = RollNotes(*(a[outside] for a in notes))
    out = roll.copy()
    out[:, mask] = 0.0
    cells = np.flatnonzero(mask)
    n_notes = min(cells.size, int(round(density * cells.size)))
    onsets = np.sort(rng.choice(cells, size=n_notes, replace=False))
    rows, starts = np.divmod(onsets, roll.shape[2])
    if durations == "uniform":
        lengths = rng.integers(1, max_duration + 1, size=n_notes)
        velocities = np.full(n_notes, 80)
    else:
        lengths = rng.choice(notes.duration, size=n_notes) if notes.pitch.size else np.ones(n_notes, np.int64)
        velocities = rng.choice(notes.velocity, size=n_notes) if notes.pitch.size else np.full(n_notes, 80)

    placed = np.zeros_like(mask)
    placed[rows, starts] = True  # a note stops at the next onset in its row, so notes never overlap
    for r, s, d, v in zip(rows, starts, lengths, velocities):
        end = s + 1
        while end < min(s + d, roll.shape[2]) and mask[r, end] and not placed[r, end]:
            end += 1
        out[ONSET, r, s] = v / 127.0
        out[SUSTAIN, r, s:end] = v / 127.0
    return out
