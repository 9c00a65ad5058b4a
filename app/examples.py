"""Bundled example MIDI files for the piano-roll tab: short excerpts of music21's corpus.

``python -m app.examples`` writes them into ``assets/examples`` (run once; the small ``.mid`` files are
committed). Every excerpt comes from a piece in the training set's fixed *validation* split
(``genmodels.data.pianoroll.is_val_piece``), so the shipped model has not seen it, and is in 4/4 or 2/2 with
no pickup bar, so bars line up with the roll's 16-column grid.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from genmodels.io import ASSETS_DIR, write_bytes_atomic

EXAMPLES_DIR = ASSETS_DIR / "examples"


@dataclass(frozen=True)
class ExampleSpec:
    """One excerpt: ``bars`` first bars of music21 corpus piece ``piece_id``, saved as ``name``.mid."""

    name: str
    label: str
    piece_id: str
    bars: int


EXAMPLES: tuple[ExampleSpec, ...] = (
    ExampleSpec("bach_bwv263", "Bach chorale BWV 263 (8 bars)", "bach/bwv263", 8),
    ExampleSpec("bach_bwv406", "Bach chorale BWV 406 (8 bars)", "bach/bwv406", 8),
    ExampleSpec("reel_from_night_till_morn", "Reel: From Night Till Morn (8 bars)",
                "ryansMammoth/FromNightTillMornReel", 8),
    ExampleSpec("reel_miss_kellys", "Reel: Miss Kelly's (12 bars)", "ryansMammoth/MissKellysReel", 12),
)


def list_examples(folder: str | Path = EXAMPLES_DIR) -> dict[str, Path]:
    """Label → path of the bundled examples present in ``folder``, in ``EXAMPLES`` order."""
    folder = Path(folder)
    return {spec.label: folder / f"{spec.name}.mid" for spec in EXAMPLES if (folder / f"{spec.name}.mid").is_file()}


def excerpt_midi(spec: ExampleSpec) -> bytes:
    """The first ``spec.bars`` bars of the corpus piece as Standard MIDI File bytes (repeats not expanded)."""
    from music21 import converter, corpus

    from genmodels.data.pianoroll import _without_repeats, score_to_midi_bytes

    if spec.piece_id.startswith("ryansMammoth/"):
        stem = spec.piece_id.split("/", 1)[1]
        path = next(p for p in corpus.getComposer("ryansMammoth") if Path(p).stem == stem)
        score = converter.parse(path)
    else:
        score = corpus.parse(spec.piece_id)
    excerpt = _without_repeats(score.measures(1, spec.bars))
    return score_to_midi_bytes(excerpt)


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[Path]:
    """Write every example into ``folder`` and check each loads as a roll of exactly its bar count."""
    from genmodels.music import STEPS_PER_BAR
    from genmodels.pipelines.pianoroll_io import load_roll

    paths = []
    for spec in EXAMPLES:
        path = write_bytes_atomic(Path(folder) / f"{spec.name}.mid", excerpt_midi(spec))
        path.chmod(0o644)
        roll, bpm = load_roll(path, min_bars=1)
        bars = roll.shape[2] // STEPS_PER_BAR
        if bars != spec.bars:
            raise RuntimeError(f"{spec.piece_id}: expected {spec.bars} bars, the MIDI has {bars}")
        print(f"{path} ({path.stat().st_size} bytes, {bars} bars, {bpm:g} bpm)")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(EXAMPLES_DIR), help="output folder")
    write_examples(parser.parse_args().out)


if __name__ == "__main__":
    main()
