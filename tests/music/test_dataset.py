"""The piano-roll dataset: corpus cache, fixed split, crops, transposition and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from genmodels.data import build_dataset
from genmodels.data.pianoroll import (
    CACHE_VERSION,
    DatasetError,
    PianoRollDataset,
    Piece,
    _without_repeats,
    build_cache,
    cache_path,
    convert_score,
    is_val_piece,
    iter_val_rolls,
    load_cache,
    random_transposition,
    score_to_midi_bytes,
    transpose_levels,
)
from genmodels.music.roll import RollNotes, midi_to_roll, notes_to_roll

# ---------------------------------------------------------------------------------------------------------
# Helpers: synthetic pieces with ids on a chosen side of the split


def ids_in_split(val: bool, n: int, prefix: str = "synthetic/piece") -> list[str]:
    ids = (f"{prefix}{i}" for i in range(10_000))
    return [pid for pid in ids if is_val_piece(pid) == val][:n]


def scale_piece(piece_id: str, bars: int, low: int = 48) -> Piece:
    """A rising scale, one note per 8th, looping over an octave, ``bars`` bars long."""
    starts = np.arange(0, bars * 16, 2)
    pitches = low + (starts // 2) % 12
    notes = RollNotes(pitches, starts, starts + 2, np.full(starts.size, 100))
    levels = np.rint(notes_to_roll(notes, bars * 16) * 254).astype(np.uint8)
    return Piece(piece_id, "synthetic", levels, 120.0, 4.0)


@pytest.fixture
def pieces() -> list[Piece]:
    train, val = ids_in_split(False, 3), ids_in_split(True, 2)
    return [
        scale_piece(train[0], 16),
        scale_piece(train[1], 9),
        scale_piece(train[2], 2),  # shorter than one 128-column crop
        scale_piece(val[0], 12),
        scale_piece(val[1], 3),
    ]


# ---------------------------------------------------------------------------------------------------------
# Split


def test_split_is_a_fixed_hash_of_the_piece_id():
    ids = [f"collection/piece{i}" for i in range(4000)]
    flags = [is_val_piece(pid) for pid in ids]
    assert 0.08 < np.mean(flags) < 0.12
    assert flags == [is_val_piece(pid) for pid in ids]
    # pinned so the held-out set can never drift silently
    assert is_val_piece("bach/bwv153.1") and not is_val_piece("bach/bwv269")


def test_splits_are_disjoint_and_cover_all_pieces(pieces):
    train = PianoRollDataset("train", pieces=pieces)
    val = PianoRollDataset("val", pieces=pieces)
    train_ids, val_ids = {p.piece_id for p in train.pieces}, {p.piece_id for p in val.pieces}
    assert not train_ids & val_ids and len(train_ids | val_ids) == len(pieces)


# ---------------------------------------------------------------------------------------------------------
# Train crops


def test_train_items_are_bar_aligned_crops_in_minus_one_to_one(pieces):
    ds = PianoRollDataset("train", width=128, pieces=pieces)
    assert len(ds) == 2 + 1 + 1  # 256 columns -> 2 items, 144 -> 1, 32 -> 1
    for i in range(len(ds)):
        item = ds[i]
        x = item["pixel_values"]
        assert x.shape == (2, 64, 128) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and (x > -1).any()
        assert item["start"] % 16 == 0
        assert -5 <= item["transpose"] <= 6


def test_short_pieces_are_padded_with_silence(pieces):
    ds = PianoRollDataset("train", width=128, transpose=None, pieces=pieces)
    item = ds[3]
    assert item["start"] == 0
    assert (item["pixel_values"][:, :, :32] > -1).any()
    assert (item["pixel_values"][:, :, 32:] == -1).all()


def test_crops_depend_only_on_seed_epoch_and_index(pieces):
    ds = PianoRollDataset("train", width=32, pieces=pieces, seed=3)
    again = PianoRollDataset("train", width=32, pieces=pieces, seed=3)
    first = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a["pixel_values"], again[i]["pixel_values"]) for i, a in enumerate(first))
    ds.set_epoch(1)
    second = [ds[i] for i in range(len(ds))]
    changed = [(a["start"], a["transpose"]) != (b["start"], b["transpose"]) for a, b in zip(first, second)]
    assert sum(changed) > len(ds) // 2
    ds.set_epoch(0)
    assert all(torch.equal(a["pixel_values"], ds[i]["pixel_values"]) for i, a in enumerate(first))


def test_transposition_shifts_rows_and_keeps_every_note():
    crop = np.zeros((2, 64, 16), dtype=np.uint8)
    crop[:, 10, 0] = crop[:, 40, 3] = 200
    up = transpose_levels(crop, 3)
    assert up[:, 7, 0].tolist() == [200, 200] and up[:, 37, 3].tolist() == [200, 200]
    assert up.sum() == crop.sum()
    down = transpose_levels(crop, -2)
    assert down[:, 12, 0].tolist() == [200, 200] and down.sum() == crop.sum()


def test_random_transposition_only_picks_shifts_that_fit():
    crop = np.zeros((2, 64, 16), dtype=np.uint8)
    crop[:, 2, 0] = crop[:, 60, 0] = 100  # 2 rows of headroom above, 3 below
    rng = np.random.default_rng(0)
    shifts = {random_transposition(crop, (-5, 6), rng) for _ in range(300)}
    assert shifts == {-3, -2, -1, 0, 1, 2}
    assert random_transposition(np.zeros_like(crop), (-5, 6), rng) in range(-5, 7)


def test_val_split_is_deterministic_and_never_transposed(pieces):
    ds = PianoRollDataset("val", width=64, pieces=pieces)
    windows = ds.val_windows()
    val_ids = ids_in_split(True, 2)
    assert windows == [(val_ids[0], 0), (val_ids[0], 64), (val_ids[0], 128), (val_ids[1], 0)]
    assert len(ds) == len(windows)
    items = [ds[i] for i in range(len(ds))]
    assert all(item["transpose"] == 0 for item in items)
    ds.set_epoch(5)
    assert all(torch.equal(item["pixel_values"], ds[i]["pixel_values"]) for i, item in enumerate(items))
    rolls = list(iter_val_rolls(ds))
    np.testing.assert_array_equal(rolls[0][2] * 2 - 1, items[0]["pixel_values"].numpy())


def test_bad_arguments_are_refused(pieces):
    with pytest.raises(DatasetError, match="multiple of 16"):
        PianoRollDataset("train", width=100, pieces=pieces)
    with pytest.raises(DatasetError, match="split"):
        PianoRollDataset("test", pieces=pieces)
    with pytest.raises(DatasetError, match="empty"):
        PianoRollDataset("val", pieces=[p for p in pieces if not is_val_piece(p.piece_id)])


def test_registry_builds_the_dataset_and_batches_collate(pieces):
    ds = build_dataset("pianoroll", "train", width=64, pieces=pieces)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 2, 64, 64) and len(batch["piece"]) == 4
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("nope", "train")


# ---------------------------------------------------------------------------------------------------------
# Corpus cache (a tiny one: a few pieces of each default collection)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pianoroll_cache")
    return folder, build_cache(max_pieces=6, cache_dir=folder, progress=False)


def test_cache_holds_both_collections_as_whole_bars(tiny_cache):
    folder, path = tiny_cache
    assert path == cache_path(folder, ("chorales", "ryansMammoth"), 6)
    assert f"-v{CACHE_VERSION}-" in path.name
    pieces = load_cache(path)
    assert len(pieces) == 6
    assert [p.source for p in pieces[:2]] == ["chorales", "ryansMammoth"]
    for p in pieces:
        assert p.roll.dtype == np.uint8 and p.roll.shape[:2] == (2, 64)
        assert p.roll.shape[2] % 16 == 0 and p.roll[1].any()
        assert np.all(p.roll[0] <= p.roll[1])  # every onset is also sustained
    assert [p.name for p in folder.iterdir()] == [path.name]  # written atomically, no temp file left


def test_pickup_bar_is_padded_to_a_full_bar(tiny_cache):
    pieces = {p.piece_id: p for p in load_cache(tiny_cache[1])}
    chorale = pieces["bach/bwv269"]  # 3/4 with a one-beat pickup: two beats of silence first
    assert chorale.bar_quarters == 3.0
    assert not chorale.roll[:, :, :8].any() and chorale.roll[0, :, 8].any()


def test_existing_cache_is_reused(tiny_cache, monkeypatch):
    folder, path = tiny_cache
    monkeypatch.setattr("genmodels.data.pianoroll.corpus_pieces", lambda *a, **k: pytest.fail("rebuilt"))
    assert build_cache(max_pieces=6, cache_dir=folder, progress=False) == path
    ds = PianoRollDataset("train", max_pieces=6, cache_dir=folder, progress=False)
    assert len(ds) >= 5 and ds[0]["pixel_values"].shape == (2, 64, 128)


def two_bar_score_with_a_repeat():
    from music21 import bar, meter, note, stream

    part = stream.Part()
    for i, pitch in enumerate(["C4", "G4"]):
        measure = stream.Measure(number=i + 1)
        if i == 0:
            measure.append(meter.TimeSignature("4/4"))
        measure.append(note.Note(pitch, quarterLength=4))
        part.append(measure)
    part.getElementsByClass(stream.Measure)[-1].rightBarline = bar.Repeat(direction="end")
    return stream.Score([part])


def test_repeats_are_expanded_or_removed_when_they_cannot_be():
    expanded = midi_to_roll(score_to_midi_bytes(two_bar_score_with_a_repeat())).roll
    assert expanded.shape[2] == 64 and int((expanded[0] > 0).sum()) == 4
    once = midi_to_roll(score_to_midi_bytes(_without_repeats(two_bar_score_with_a_repeat()))).roll
    assert once.shape[2] == 32 and int((once[0] > 0).sum()) == 2


def test_mixed_meter_abc_tunes_convert():
    from music21 import corpus

    # this tune alternates 4/2 and 4/4 bars, which music21's MIDI writer cannot handle unaided
    piece = convert_score(corpus.parse("essenFolksong/altdeu10", number=5), "essenFolksong/altdeu10#5", "essen")
    assert piece.roll.shape[2] >= 640 and piece.roll[0].any()
