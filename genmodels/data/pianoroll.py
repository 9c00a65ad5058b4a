"""Piano-roll dataset built from music21's bundled corpus (offline; no download).

Pieces
------
``COLLECTIONS`` names the sources; ``DEFAULT_COLLECTIONS`` are used unless told otherwise:

- ``"chorales"``: the 371 Bach chorales of ``music21.corpus.chorales.Iterator`` (four voices, ids
  ``bach/bwv269``).
- ``"ryansMammoth"``: Ryan's Mammoth Collection, 1059 fiddle tunes (reels, jigs, hornpipes; one melody each,
  ids ``ryansMammoth/7thRegimentReel``).
- ``"essenFolksong"``: the Essen folk-song collection bundled with music21, about 8,400 mostly German songs
  (one melody each, ids ``essenFolksong/altdeu10#5`` = tune ``X:5`` of ``altdeu10.abc``); the ``test*.abc``
  sample files are left out. It is not a default collection because converting it takes about twice as long as
  the other two together (see ``build_cache``) and would make 85% of the data short German songs; pass
  ``collections=`` to include it.

Each piece is converted once: music21 score -> Standard MIDI File bytes -> ``midi_to_roll`` (the path user
MIDI files take; ``genmodels.music.roll`` defines the roll format). A pickup bar is padded with silence at the
start so the first full bar starts at a multiple of its bar length, and every roll is padded at the end to a
whole number of 16-column bars. music21 expands repeats when it writes MIDI; a piece with repeats it cannot
expand is written with its repeats removed. Pieces music21 cannot parse or convert are skipped and counted.

Cache
-----
One compressed ``.npz`` per (version, collections, max_pieces) under ``cache_dir`` (default
``$LINGEN_CACHE/pianoroll`` or ``~/.cache/lingen/pianoroll``), written atomically. It holds all rolls
concatenated along time as uint8 PNG levels (``round(value * 254)``, exact for rolls made from MIDI),
``offsets`` ``[N+1]`` into that time axis, per piece ``piece_ids``, ``sources`` (collection), ``bpm`` and
``bar_quarters`` (bar length in quarter notes from the time signature), and the ``skipped_ids``. Build it
ahead of training with ``python -m genmodels.data.pianoroll``.

Split
-----
A piece is in the validation split when the SHA-1 of its id, read as a number in [0, 1), is below
``VAL_FRACTION`` (10%), so the split never changes with ``max_pieces`` or with collections added later.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from genmodels.music.roll import (
    MAX_ROLL_COLUMNS,
    PNG_LEVELS,
    ROLL_PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_BEAT,
    midi_to_roll,
)

CACHE_VERSION = 2
VAL_FRACTION = 0.1
COLLECTIONS = ("chorales", "ryansMammoth", "essenFolksong")
DEFAULT_COLLECTIONS = ("chorales", "ryansMammoth")


class DatasetError(ValueError):
    """Bad dataset arguments or an unusable cache."""


# ---------------------------------------------------------------------------------------------------------
# Split


def is_val_piece(piece_id: str) -> bool:
    """True when ``piece_id`` belongs to the fixed validation split (SHA-1 of the id < ``VAL_FRACTION``)."""
    digest = hashlib.sha1(piece_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < VAL_FRACTION


# ---------------------------------------------------------------------------------------------------------
# Corpus enumeration: each collection yields (piece_id, loader) pairs in a fixed order


PieceLoader = Callable[[], object]  # returns a music21 Score


def _chorales() -> list[tuple[str, PieceLoader]]:
    from music21 import corpus

    names = list(corpus.chorales.Iterator(returnType="filename"))
    return [(name, lambda name=name: corpus.parse(name)) for name in names]


def _ryans_mammoth() -> list[tuple[str, PieceLoader]]:
    from music21 import converter, corpus

    paths = sorted(corpus.getComposer("ryansMammoth"), key=lambda p: Path(p).name)
    return [(f"ryansMammoth/{Path(p).stem}", lambda p=p: converter.parse(p)) for p in paths]


def _essen_folksong() -> list[tuple[str, PieceLoader]]:
    from music21 import converter, corpus

    pieces = []
    paths = sorted(corpus.getComposer("essenFolksong"), key=lambda p: Path(p).name)
    for path in paths:
        if Path(path).name.startswith("test"):
            continue
        with open(path, encoding="latin-1") as f:
            numbers = [line[2:].strip() for line in f if line.startswith("X:")]
        for number in dict.fromkeys(numbers):  # unique, in file order
            pieces.append(
                (
                    f"essenFolksong/{Path(path).stem}#{number}",
                    lambda path=path, number=number: converter.parse(path, number=int(number)),
                )
            )
    return pieces


_ENUMERATORS: dict[str, Callable[[], list[tuple[str, PieceLoader]]]] = {
    "chorales": _chorales,
    "ryansMammoth": _ryans_mammoth,
    "essenFolksong": _essen_folksong,
}


def corpus_pieces(collections: Sequence[str], max_pieces: int | None = None) -> list[tuple[str, str, PieceLoader]]:
    """(source, piece_id, loader) triples; with ``max_pieces`` the collections are taken round-robin."""
    unknown = [c for c in collections if c not in _ENUMERATORS]
    if unknown:
        raise DatasetError(f"unknown collection(s) {unknown}; known: {list(COLLECTIONS)}")
    lists = [[(c, pid, load) for pid, load in _ENUMERATORS[c]()] for c in collections]
    if max_pieces is None:
        return [item for lst in lists for item in lst]
    interleaved = []
    for i in range(max(map(len, lists), default=0)):
        interleaved += [lst[i] for lst in lists if i < len(lst)]
    return interleaved[:max_pieces]


# ---------------------------------------------------------------------------------------------------------
# Conversion


@dataclass
class Piece:
    """One converted piece: ``roll`` uint8 levels ``[2, 64, W]`` with W a multiple of 16."""

    piece_id: str
    source: str
    roll: np.ndarray
    bpm: float
    bar_quarters: float


def _pickup_quarters(score) -> float:
    """Length of the silence that completes a pickup (anacrusis) first bar, in quarter notes."""
    from music21 import stream

    parts = score.parts if score.parts else [score]
    measure = parts[0].getElementsByClass(stream.Measure).first()
    if measure is None:
        return 0.0
    missing = float(measure.barDuration.quarterLength - measure.duration.quarterLength)
    return max(0.0, missing)


def _bar_quarters(score) -> float:
    from music21 import meter

    ts = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    return float(ts.barDuration.quarterLength) if ts is not None else 4.0


def _without_repeats(score):
    """``score`` with repeat barlines, brackets and expressions removed (each section then plays once)."""
    from music21 import bar, repeat, spanner, stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = bar.Barline()
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline()
    for element in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
        element.activeSite.remove(element)
    return score


def _unshare_time_signatures(score):
    """Give each measure its own TimeSignature object.

    music21's ABC reader reuses one object for every bar of a recurring meter (mixed-meter tunes, about 11%
    of the Essen collection), and its MIDI writer then fails trying to insert that object twice.
    """
    from music21 import meter

    seen = set()
    for container in score.recurse(streamsOnly=True, includeSelf=True):
        for ts in list(container.getElementsByClass(meter.TimeSignature)):
            if id(ts) in seen:
                container.replace(ts, copy.deepcopy(ts))
            seen.add(id(ts))
    return score


def score_to_midi_bytes(score) -> bytes:
    """Standard MIDI File bytes of a music21 score, repeats expanded as music21 does.

    A score whose repeats music21 cannot expand (badly formed, about 3% of Ryan's Mammoth) is written with its
    repeats removed instead of being lost.
    """
    from music21.midi import translate
    from music21.repeat import ExpanderException

    score = _unshare_time_signatures(score)
    try:
        return translate.music21ObjectToMidiFile(score).writestr()
    except ExpanderException:
        return translate.music21ObjectToMidiFile(_without_repeats(score)).writestr()


def convert_score(score, piece_id: str, source: str) -> Piece:
    """music21 score -> MIDI bytes -> roll, with pickup padding and the width padded to whole bars."""
    info = midi_to_roll(score_to_midi_bytes(score))
    levels = np.rint(info.roll * PNG_LEVELS).astype(np.uint8)
    lead = int(round(_pickup_quarters(score) * STEPS_PER_BEAT))
    width = lead + levels.shape[2]
    tail = -width % STEPS_PER_BAR
    levels = np.pad(levels, ((0, 0), (0, 0), (lead, tail)))
    return Piece(piece_id, source, levels, info.bpm, _bar_quarters(score))


# ---------------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    root = os.environ.get("LINGEN_CACHE")
    return Path(root) / "pianoroll" if root else Path.home() / ".cache" / "lingen" / "pianoroll"


def cache_path(cache_dir: str | Path | None, collections: Sequence[str], max_pieces: int | None) -> Path:
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    count = "all" if max_pieces is None else str(max_pieces)
    return directory / f"pianoroll-v{CACHE_VERSION}-{'+'.join(collections)}-{count}.npz"


def save_cache(path: Path, pieces: Sequence[Piece], skipped: Sequence[str] = ()) -> None:
    """Write ``pieces`` (and the ids of ``skipped`` pieces) as one compressed npz, atomically."""
    if not pieces:
        raise DatasetError("refusing to write an empty piano-roll cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "version": np.array(CACHE_VERSION),
        "levels": np.concatenate([p.roll for p in pieces], axis=2),
        "offsets": np.cumsum([0] + [p.roll.shape[2] for p in pieces]).astype(np.int64),
        "piece_ids": np.array([p.piece_id for p in pieces], dtype=str),
        "sources": np.array([p.source for p in pieces], dtype=str),
        "bpm": np.array([p.bpm for p in pieces], dtype=np.float32),
        "bar_quarters": np.array([p.bar_quarters for p in pieces], dtype=np.float32),
        "skipped_ids": np.array(list(skipped), dtype=str),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cache(path: Path) -> list[Piece]:
    with np.load(path, allow_pickle=False) as data:
        if int(data["version"]) != CACHE_VERSION:
            raise DatasetError(f"{path}: cache version {int(data['version'])}, expected {CACHE_VERSION}")
        levels, offsets = data["levels"], data["offsets"]
        return [
            Piece(str(pid), str(src), levels[:, :, a:b], float(bpm), float(bq))
            for pid, src, a, b, bpm, bq in zip(
                data["piece_ids"],
                data["sources"],
                offsets[:-1],
                offsets[1:],
                data["bpm"],
                data["bar_quarters"],
            )
        ]


def build_cache(
    collections: Sequence[str] = DEFAULT_COLLECTIONS,
    *,
    max_pieces: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Convert the corpus once and write the cache; return its path (nothing is done if it exists).

    Measured on a shared 2-core machine (one process): chorales 370 pieces in ~1.8 min, ryansMammoth ~1030 in
    ~4.5 min, both (the default) ~4.5-6.5 min for a 0.7 MB cache; essenFolksong ~8,400 pieces in ~9 min more.
    """
    path = cache_path(cache_dir, collections, max_pieces)
    if path.exists():
        return path
    pieces, skipped = [], []
    started = time.perf_counter()
    items = corpus_pieces(collections, max_pieces)
    for source, piece_id, load in tqdm(items, desc="piano rolls", unit="piece", disable=not progress):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pieces.append(convert_score(load(), piece_id, source))
        except Exception as err:  # music21 raises many types on odd corpus files; skip the piece
            skipped.append((piece_id, f"{type(err).__name__}: {err}"))
    if not pieces:
        raise DatasetError(f"no piece of {list(collections)} could be converted; first errors: {skipped[:3]}")
    save_cache(path, pieces, [piece_id for piece_id, _ in skipped])
    if progress:
        print(
            f"piano-roll cache: {len(pieces)} pieces, {len(skipped)} skipped, "
            f"{time.perf_counter() - started:.0f} s -> {path} ({path.stat().st_size / 1e6:.1f} MB)"
        )
        for piece_id, reason in skipped[:5]:
            print(f"  skipped {piece_id}: {reason[:120]}")
    return path


def load_pieces(
    collections: Sequence[str] = DEFAULT_COLLECTIONS,
    *,
    max_pieces: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[Piece]:
    """All converted pieces, building the cache first if needed."""
    return load_cache(build_cache(collections, max_pieces=max_pieces, cache_dir=cache_dir, progress=progress))


# ---------------------------------------------------------------------------------------------------------
# Dataset


class PianoRollDataset(Dataset):
    """Bar-aligned ``width``-column crops of piano rolls, as model inputs in [-1, 1].

    Items are dicts: ``pixel_values`` float32 ``[2, 64, width]`` (roll * 2 - 1), ``piece`` (id), ``start``
    (first column of the crop in the piece) and ``transpose`` (semitones applied).

    train: one item per ``width`` columns of each piece (at least one per piece), so long pieces are seen
        proportionally more. Item ``i`` is a random crop of its piece starting at a multiple of 16 (pieces
        shorter than ``width`` are padded with silence at the end), transposed by a random number of
        semitones in ``transpose = (low, high)`` (inclusive) chosen among those that keep every note of the
        crop inside the 64 rows. Randomness is a function of ``(seed, epoch, index)``: call ``set_epoch``.
    val: the fixed non-overlapping windows of ``val_windows()`` (starts 0, width, 2 width, ...; windows with
        no note are left out), never transposed, so evaluation is reproducible.

    ``pieces`` (a list of ``Piece``) bypasses the corpus cache; the split is still applied to their ids.
    """

    def __init__(
        self,
        split: str = "train",
        width: int = 128,
        transpose: tuple[int, int] | None = (-5, 6),
        cache_dir: str | Path | None = None,
        max_pieces: int | None = None,
        seed: int = 0,
        collections: Sequence[str] = DEFAULT_COLLECTIONS,
        pieces: Sequence[Piece] | None = None,
        progress: bool = True,
    ) -> None:
        if split not in ("train", "val"):
            raise DatasetError(f"split must be 'train' or 'val', got {split!r}")
        if isinstance(width, bool) or not isinstance(width, int) or not 0 < width <= MAX_ROLL_COLUMNS \
                or width % STEPS_PER_BAR:
            raise DatasetError(f"width must be a positive multiple of {STEPS_PER_BAR} columns up to "
                               f"{MAX_ROLL_COLUMNS}, got {width!r}")
        if transpose is not None and (not isinstance(transpose, (tuple, list)) or len(transpose) != 2
                                      or not all(isinstance(t, int) and not isinstance(t, bool) for t in transpose)
                                      or transpose[0] > transpose[1]):
            raise DatasetError(f"transpose must be (low, high) semitones with low <= high, got {transpose!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
        if pieces is None:
            pieces = load_pieces(collections, max_pieces=max_pieces, cache_dir=cache_dir, progress=progress)
        want_val = split == "val"
        self.pieces = [p for p in pieces if is_val_piece(p.piece_id) == want_val]
        if not self.pieces:
            raise DatasetError(f"the {split} split is empty ({len(pieces)} pieces in all); use more pieces")
        self.split = split
        self.width = width
        self.transpose = transpose if split == "train" and transpose is not None else (0, 0)
        self.seed = seed
        self.epoch = 0
        if split == "train":
            chunks = [max(1, p.roll.shape[2] // width) for p in self.pieces]
            self._index = np.repeat(np.arange(len(self.pieces)), chunks)
        else:
            self._windows = self.val_windows()
            self._by_id = {p.piece_id: p for p in self.pieces}

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops and transpositions of ``epoch`` (train split)."""
        self.epoch = int(epoch)

    def val_windows(self, width: int | None = None) -> list[tuple[str, int]]:
        """Deterministic ``(piece id, start column)`` windows of this split's pieces that hold a note."""
        width = width or self.width
        return [
            (piece.piece_id, start)
            for piece in self.pieces
            for start in range(0, piece.roll.shape[2], width)
            if piece.roll[:, :, start : start + width].any()
        ]

    def __len__(self) -> int:
        return len(self._index) if self.split == "train" else len(self._windows)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.split == "train":
            rng = np.random.default_rng((self.seed, self.epoch, index))
            piece = self.pieces[int(self._index[index])]
            n_starts = max(1, (piece.roll.shape[2] - self.width) // STEPS_PER_BAR + 1)
            start = int(rng.integers(n_starts)) * STEPS_PER_BAR
        else:
            piece_id, start = self._windows[index]
            piece = self._by_id[piece_id]
            rng = None
        crop = crop_levels(piece.roll, start, self.width)
        semitones = 0 if rng is None else random_transposition(crop, self.transpose, rng)
        crop = transpose_levels(crop, semitones)
        values = crop.astype(np.float32) / PNG_LEVELS
        return {
            "pixel_values": torch.from_numpy(values * 2.0 - 1.0),
            "piece": piece.piece_id,
            "start": start,
            "transpose": semitones,
        }

    def __repr__(self) -> str:
        return (
            f"PianoRollDataset(split={self.split!r}, pieces={len(self.pieces)}, items={len(self)}, "
            f"width={self.width}, transpose={self.transpose})"
        )


def crop_levels(levels: np.ndarray, start: int, width: int) -> np.ndarray:
    """Columns ``start : start + width`` of ``levels`` ``[2, 64, W]``, padded with silence past the end."""
    crop = levels[:, :, start : start + width]
    return np.pad(crop, ((0, 0), (0, 0), (0, width - crop.shape[2])))


def random_transposition(crop: np.ndarray, semitones: tuple[int, int], rng: np.random.Generator) -> int:
    """A shift in ``semitones`` (inclusive range) that keeps every note of ``crop`` inside the 64 rows."""
    low, high = semitones
    rows = np.flatnonzero(crop.any(axis=(0, 2)))
    if rows.size:  # shifting up by k moves row r to r - k
        low, high = max(low, int(rows.max()) - (ROLL_PITCHES - 1)), min(high, int(rows.min()))
    if low > high:  # the range allows no shift that fits: keep the crop as it is
        return 0
    return int(rng.integers(low, high + 1))


def transpose_levels(crop: np.ndarray, semitones: int) -> np.ndarray:
    """Shift ``crop`` ``[2, 64, W]`` up by ``semitones`` (rows move up); notes shifted out are dropped."""
    if semitones == 0:
        return crop
    out = np.zeros_like(crop)
    if semitones > 0:
        out[:, : ROLL_PITCHES - semitones] = crop[:, semitones:]
    else:
        out[:, -semitones:] = crop[:, : ROLL_PITCHES + semitones]
    return out


def iter_val_rolls(dataset: PianoRollDataset) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(piece id, start, roll [2, 64, width] in [0, 1])`` for each validation window, in order."""
    by_id = {p.piece_id: p for p in dataset.pieces}
    for piece_id, start in dataset.val_windows():
        yield (
            piece_id,
            start,
            crop_levels(by_id[piece_id].roll, start, dataset.width).astype(np.float32) / PNG_LEVELS,
        )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Build the piano-roll cache from music21's corpus.")
    parser.add_argument("--collections", nargs="+", default=list(DEFAULT_COLLECTIONS), choices=COLLECTIONS)
    parser.add_argument("--max-pieces", type=int, default=None)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    path = build_cache(args.collections, max_pieces=args.max_pieces, cache_dir=args.cache_dir)
    pieces = load_cache(path)
    n_val = sum(is_val_piece(p.piece_id) for p in pieces)
    columns = sum(p.roll.shape[2] for p in pieces)
    print(f"{path}: {len(pieces)} pieces ({n_val} val), {columns} columns ({columns // STEPS_PER_BAR} bars)")


if __name__ == "__main__":
    main()
