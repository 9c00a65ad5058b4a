"""MIDI <-> piano-roll conversion: the one place where the piano-roll format is defined.

Format
------
A roll is a float32 numpy array ``[2, P, W]`` with values in ``[0, 1]``:

- **Pitch** (axis 1): ``P = ROLL_PITCHES = 64`` rows covering MIDI pitches ``PITCH_LOW = 28`` (E1) to
  ``PITCH_HIGH = 91`` (G6). Row 0 is the *highest* pitch (91) and row 63 the lowest (28), so high notes are at
  the top of the image. ``pitch_to_row`` / ``row_to_pitch`` convert. Notes outside 28..91 are moved by whole
  octaves into the range when a MIDI file is read.
- **Time** (axis 2): one column per 16th note, ``STEPS_PER_BEAT = 4`` columns per quarter-note beat and
  ``STEPS_PER_BAR = 16`` columns per bar. A bar is always 16 columns (one 4/4 bar), whatever the piece's time
  signature: 3/4 or 6/8 music simply does not line up with the 16-column grid.
- **Channel 0, onset**: ``velocity / 127`` at a note's first column, 0 elsewhere.
- **Channel 1, sustain**: ``velocity / 127`` on every column the note sounds, the onset column included.

Rolls made from MIDI therefore hold multiples of 1/127. The onset channel separates repeated notes, so no
gap column is needed before a repeated onset (unlike Pictures of MIDI, which blacks out that column).

MIDI -> roll (``midi_to_roll``)
-------------------------------
- Times are converted to beats with the file's tempo map, so tempo changes are handled. Start and duration are
  rounded separately: ``start = round(beat * 4)``, ``duration = max(1, round(duration_beats * 4))``.
- All non-drum instruments are merged into one roll; drum tracks are dropped. Where notes overlap on a cell
  the larger velocity wins. Two notes of one pitch starting in the same column become one note (the louder
  velocity, the longer duration). Overlapping notes of one pitch are cut at the later onset: the sustain
  channel is the union, so the pitch sounds until the last covering note ends, and decoding starts a new note
  at each onset.

Roll -> MIDI (``roll_to_midi`` / ``roll_notes``)
------------------------------------------------
A pixel is "on" when its value is ``>= threshold``. A note starts at every onset pixel that is on and lasts
while the sustain pixels in the following columns are on, until sustain goes off or the row's next onset.
Velocity is ``round(onset * 127)``, clipped to 1..127. A sustain run with no onset pixel is treated as a note
starting at the run's first column (velocity from its sustain value) unless ``require_onset=True`` drops it.

- ``EXACT_THRESHOLD = 0.5 / 127`` (the default) is half a velocity step: rolls made from MIDI (or from PNGs of
  them) decode exactly, every velocity 1..127 included.
- ``MODEL_THRESHOLD = 0.2`` is the recommended value for decoding model samples, whose background is
  never exactly 0.

Round-trip guarantee: a quantised MIDI (notes on the 16th grid, pitches 28..91, velocities 1..127, no
overlapping notes of one pitch) survives ``roll_to_midi(midi_to_roll(pm).roll, bpm=...)`` exactly: same
pitches, velocities, and start / end times to the 16th at the given tempo.

PNG (``roll_to_image`` / ``image_to_roll``)
-------------------------------------------
An RGB image ``W x 64``: red = onset, green = sustain, blue = 0, with 8-bit level ``round(value * 254)``, so
a velocity ``v`` is stored as ``2 v`` (Pictures of MIDI's "green = 2 x velocity") and a level ``k`` reads back
as ``k / 254`` (255 is clipped to 1.0). Rolls made from MIDI survive roll -> PNG -> roll exactly, and any PNG
survives PNG -> roll -> PNG exactly. Always save PNG: lossy codecs change the velocities.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pretty_midi
from PIL import Image

# ---------------------------------------------------------------------------------------------------------
# Format constants

PITCH_LOW = 28
PITCH_HIGH = 91
ROLL_PITCHES = PITCH_HIGH - PITCH_LOW + 1  # 64
STEPS_PER_BEAT = 4  # columns per quarter note: one column per 16th note
STEPS_PER_BAR = 16  # columns per bar, whatever the time signature
ONSET, SUSTAIN = 0, 1  # channel indices

EXACT_THRESHOLD = 0.5 / 127  # half a velocity step: exact decoding of rolls made from MIDI
MODEL_THRESHOLD = 0.2  # recommended for decoding model samples
PNG_LEVELS = 254  # 8-bit level of value 1.0 in PNGs: velocity v <-> level 2 v

MAX_MIDI_BYTES = 2 * 1024 * 1024  # larger files are refused by load_midi
MAX_ROLL_COLUMNS = 1 << 16  # 4096 bars; longer pieces are refused rather than allocated

MidiSource = pretty_midi.PrettyMIDI | str | Path | bytes | bytearray


class MidiError(ValueError):
    """A MIDI input that cannot be used: corrupt, not MIDI, empty, too large or too long."""


def pitch_to_row(pitch: int) -> int:
    """Row of MIDI ``pitch`` (28..91) in a roll; row 0 is the highest pitch."""
    if not PITCH_LOW <= pitch <= PITCH_HIGH:
        raise ValueError(f"pitch {pitch} is outside the roll's range {PITCH_LOW}..{PITCH_HIGH}")
    return PITCH_HIGH - int(pitch)


def row_to_pitch(row: int) -> int:
    """MIDI pitch of roll ``row`` (0..63); row 0 is pitch 91."""
    if not 0 <= row < ROLL_PITCHES:
        raise ValueError(f"row {row} is outside 0..{ROLL_PITCHES - 1}")
    return PITCH_HIGH - int(row)


def fold_pitch(pitch: int) -> int:
    """Move ``pitch`` by whole octaves into ``PITCH_LOW..PITCH_HIGH`` (unchanged if already inside)."""
    if pitch < PITCH_LOW:
        return pitch + 12 * -(-(PITCH_LOW - pitch) // 12)
    if pitch > PITCH_HIGH:
        return pitch - 12 * -(-(pitch - PITCH_HIGH) // 12)
    return pitch


def check_roll(roll: np.ndarray) -> np.ndarray:
    """Return ``roll`` as float32 after checking it is a ``[2, 64, W]`` array; raise ValueError if not."""
    roll = np.asarray(roll)
    if roll.ndim != 3 or roll.shape[0] != 2 or roll.shape[1] != ROLL_PITCHES:
        raise ValueError(f"expected a roll of shape [2, {ROLL_PITCHES}, W], got {list(roll.shape)}")
    roll = roll.astype(np.float32, copy=False)
    if not np.all(np.isfinite(roll)):
        raise ValueError("roll contains NaN or infinite values")
    return roll


def empty_roll(width: int) -> np.ndarray:
    """A silent roll ``[2, 64, width]``."""
    return np.zeros((2, ROLL_PITCHES, width), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Notes <-> roll


class RollNotes(NamedTuple):
    """Notes of a roll as parallel int arrays ``[N]``, sorted by (start, pitch).

    ``pitch`` is a MIDI pitch, ``start`` / ``end`` columns (16th notes, end exclusive), ``velocity`` 1..127.
    """

    pitch: np.ndarray
    start: np.ndarray
    end: np.ndarray
    velocity: np.ndarray

    @property
    def row(self) -> np.ndarray:
        return PITCH_HIGH - self.pitch

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start


def notes_to_roll(notes: RollNotes, width: int | None = None) -> np.ndarray:
    """Draw notes into a new roll ``[2, 64, width]`` (width defaults to the last note's end).

    Where notes overlap on a cell the larger velocity wins. Pitches must already be in 28..91.
    """
    pitch, start, end, velocity = (np.asarray(a, dtype=np.int64) for a in notes)
    if pitch.size and (pitch.min() < PITCH_LOW or pitch.max() > PITCH_HIGH):
        raise ValueError(f"note pitches must be in {PITCH_LOW}..{PITCH_HIGH}")
    if width is None:
        width = int(end.max()) if end.size else 0
    roll = empty_roll(width)
    value = velocity.astype(np.float32) / 127.0
    rows = PITCH_HIGH - pitch
    np.maximum.at(roll[ONSET], (rows, start), value)
    for r, s, e, v in zip(rows, start, end, value):
        np.maximum(roll[SUSTAIN, r, s:e], v, out=roll[SUSTAIN, r, s:e])
    return roll


def roll_notes(roll: np.ndarray, *, threshold: float = EXACT_THRESHOLD, require_onset: bool = False) -> RollNotes:
    """Decode the notes of ``roll`` ``[2, 64, W]`` (see the module docstring for the rule)."""
    roll = check_roll(roll)
    _, n_rows, width = roll.shape
    # A False column after each row makes every row end in a break, so notes never run across rows.
    on = np.zeros((n_rows, width + 1), dtype=bool)
    sus = np.zeros((n_rows, width + 1), dtype=bool)
    on[:, :width] = roll[ONSET] >= threshold
    sus[:, :width] = roll[SUSTAIN] >= threshold
    active = on | sus
    active_before = np.zeros_like(active)
    active_before[:, 1:] = active[:, :-1]
    continues = sus & ~on & active_before
    starts_at = active & ~continues
    if require_onset:
        starts_at &= on

    breaks = np.flatnonzero(~continues)
    starts = np.flatnonzero(starts_at)
    ends = breaks[np.searchsorted(breaks, starts, side="right")]
    rows, start_cols = np.divmod(starts, width + 1)
    end_cols = ends - rows * (width + 1)

    has_onset = on[rows, start_cols]
    value = np.where(has_onset, roll[ONSET, rows, start_cols], roll[SUSTAIN, rows, start_cols])
    velocity = np.clip(np.rint(value * 127.0), 1, 127).astype(np.int64)
    order = np.lexsort((-rows, start_cols))
    return RollNotes(
        pitch=(PITCH_HIGH - rows[order]).astype(np.int64),
        start=start_cols[order].astype(np.int64),
        end=end_cols[order].astype(np.int64),
        velocity=velocity[order],
    )


# ---------------------------------------------------------------------------------------------------------
# MIDI input


def load_midi(source: str | Path | bytes | bytearray) -> pretty_midi.PrettyMIDI:
    """Read a MIDI file from a path or bytes; raise ``MidiError`` (and only that) if it cannot be used.

    Refused: missing or unreadable files, files over ``MAX_MIDI_BYTES``, data that is not a Standard MIDI
    File, files pretty_midi cannot parse, and files with no notes at all.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "MIDI data"
    else:
        path = Path(source)
        name = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_MIDI_BYTES:
                raise MidiError(f"{name}: file is {size} bytes, more than the {MAX_MIDI_BYTES} byte limit")
            data = path.read_bytes()
        except OSError as err:
            raise MidiError(f"{name}: cannot read file ({err.strerror or err})") from err
    if len(data) > MAX_MIDI_BYTES:
        raise MidiError(f"{name}: {len(data)} bytes, more than the {MAX_MIDI_BYTES} byte limit")
    if not data.startswith(b"MThd"):
        raise MidiError(f"{name}: not a Standard MIDI File (no 'MThd' header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about meta events on non-zero tracks
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as err:  # mido and pretty_midi raise many types on corrupt data
        raise MidiError(f"{name}: corrupt MIDI file ({type(err).__name__}: {err})") from err
    if not any(inst.notes for inst in pm.instruments):
        raise MidiError(f"{name}: the MIDI file contains no notes")
    return pm


@dataclass
class RollInfo:
    """Result of ``midi_to_roll``.

    roll:            float32 ``[2, 64, W]``, W = the last note's end column (16th notes).
    bpm:             the file's initial tempo (or ``bpm``), for decoding back to seconds. The roll is in beats,
                     so a piece with tempo changes decodes at this one tempo.
    time_signature:  the first time signature as (numerator, denominator), None if the file has none.
    n_notes:         non-drum notes read from the file.
    n_drum_dropped:  drum notes dropped.
    n_folded:        notes moved by octaves into 28..91.
    n_merged:        notes merged into another note of the same pitch and onset column.
    """

    roll: np.ndarray
    bpm: float
    time_signature: tuple[int, int] | None
    n_notes: int
    n_drum_dropped: int
    n_folded: int
    n_merged: int


def _seconds_to_beats(seconds: np.ndarray, pm: pretty_midi.PrettyMIDI, bpm: float | None) -> np.ndarray:
    """Quarter-note beats at ``seconds``, through the tempo map (or a constant ``bpm`` if given)."""
    if bpm is not None:
        return seconds * (bpm / 60.0)
    change_times, tempi = pm.get_tempo_changes()
    if change_times.size == 0:
        change_times, tempi = np.array([0.0]), np.array([120.0])
    beats_at_change = np.concatenate([[0.0], np.cumsum(np.diff(change_times) * tempi[:-1] / 60.0)])
    seg = np.clip(np.searchsorted(change_times, seconds, side="right") - 1, 0, None)
    return beats_at_change[seg] + (seconds - change_times[seg]) * tempi[seg] / 60.0


def midi_to_roll(source: MidiSource, *, bpm: float | None = None) -> RollInfo:
    """Quantise a MIDI file onto the 16th-note grid as a roll (see the module docstring for the rules).

    ``source`` is a PrettyMIDI, a path or bytes (read with ``load_midi``). With ``bpm`` given the tempo map is
    ignored and the file is read as if it had that constant tempo. Raises ``MidiError`` for unusable input,
    including a file whose only notes are drums.
    """
    if bpm is not None and bpm <= 0:
        raise ValueError(f"bpm must be positive, got {bpm}")
    pm = source if isinstance(source, pretty_midi.PrettyMIDI) else load_midi(source)
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    n_drums = sum(len(inst.notes) for inst in pm.instruments if inst.is_drum)
    if not notes:
        raise MidiError("the MIDI file has no non-drum notes")

    start_s = np.array([n.start for n in notes], dtype=np.float64)
    end_s = np.array([n.end for n in notes], dtype=np.float64)
    start_b = _seconds_to_beats(start_s, pm, bpm)
    end_b = _seconds_to_beats(end_s, pm, bpm)
    start = np.maximum(0, np.rint(start_b * STEPS_PER_BEAT)).astype(np.int64)
    duration = np.maximum(1, np.rint((end_b - start_b) * STEPS_PER_BEAT)).astype(np.int64)
    width = int((start + duration).max())
    if width > MAX_ROLL_COLUMNS:
        raise MidiError(f"the piece is {width} 16th notes long, more than the {MAX_ROLL_COLUMNS} limit")

    raw_pitch = np.array([n.pitch for n in notes], dtype=np.int64)
    pitch = np.array([fold_pitch(int(p)) for p in raw_pitch], dtype=np.int64)
    velocity = np.clip([n.velocity for n in notes], 1, 127).astype(np.int64)
    n_merged = len(notes) - len(set(zip(pitch.tolist(), start.tolist())))

    roll = notes_to_roll(RollNotes(pitch, start, start + duration, velocity), width)
    if bpm is None:
        tempi = pm.get_tempo_changes()[1]
        bpm = float(tempi[0]) if tempi.size else 120.0
    ts = pm.time_signature_changes
    return RollInfo(
        roll=roll,
        bpm=float(bpm),
        time_signature=(ts[0].numerator, ts[0].denominator) if ts else None,
        n_notes=len(notes),
        n_drum_dropped=n_drums,
        n_folded=int(np.count_nonzero(pitch != raw_pitch)),
        n_merged=n_merged,
    )


# ---------------------------------------------------------------------------------------------------------
# MIDI output


def roll_to_midi(
    roll: np.ndarray,
    *,
    bpm: float = 120.0,
    program: int = 0,
    threshold: float = EXACT_THRESHOLD,
    require_onset: bool = False,
) -> pretty_midi.PrettyMIDI:
    """Decode ``roll`` ``[2, 64, W]`` into a PrettyMIDI with one instrument (General MIDI ``program``).

    A column lasts ``60 / bpm / 4`` seconds. Use ``threshold=MODEL_THRESHOLD`` for model samples.
    """
    if bpm <= 0:
        raise ValueError(f"bpm must be positive, got {bpm}")
    notes = roll_notes(roll, threshold=threshold, require_onset=require_onset)
    step = 60.0 / bpm / STEPS_PER_BEAT
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [
        pretty_midi.Note(velocity=int(v), pitch=int(p), start=s * step, end=e * step)
        for p, s, e, v in zip(notes.pitch, notes.start, notes.end, notes.velocity)
    ]
    pm.instruments.append(inst)
    return pm


# ---------------------------------------------------------------------------------------------------------
# Images


def roll_to_image(roll: np.ndarray) -> Image.Image:
    """The roll as an RGB image ``W x 64``: red = onset, green = sustain, 8-bit level ``round(value*254)``."""
    roll = check_roll(roll)
    levels = np.rint(np.clip(roll, 0.0, 1.0) * PNG_LEVELS).astype(np.uint8)
    rgb = np.zeros((ROLL_PITCHES, roll.shape[2], 3), dtype=np.uint8)
    rgb[..., 0] = levels[ONSET]
    rgb[..., 1] = levels[SUSTAIN]
    return Image.fromarray(rgb)


def image_to_roll(image: Image.Image) -> np.ndarray:
    """Inverse of ``roll_to_image``; any PIL mode is converted to RGB, blue is ignored, 255 reads as 1.0."""
    if image.height != ROLL_PITCHES:
        raise ValueError(
            f"a piano-roll image must be {ROLL_PITCHES} pixels tall (one row per pitch), got {image.height}"
        )
    if image.width > MAX_ROLL_COLUMNS:  # checked on the header's size, before anything is decoded
        raise ValueError(f"the piano-roll image is too large: {image.width} columns, more than the "
                         f"{MAX_ROLL_COLUMNS} limit")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    roll = np.stack([rgb[..., 0], rgb[..., 1]]) / PNG_LEVELS
    return np.minimum(roll, 1.0).astype(np.float32)


_BACKGROUND = np.array([16, 18, 24], dtype=np.float32)
_BAR_LINE = np.array([48, 52, 64], dtype=np.float32)
_OCTAVE_LINE = np.array([26, 29, 38], dtype=np.float32)
_MASK_TINT = np.array([40, 30, 22], dtype=np.float32)
_NOTE = np.array([120, 190, 255], dtype=np.float32)  # light blue: given notes
_GENERATED = np.array([255, 150, 40], dtype=np.float32)  # orange: notes inside highlight_mask


def render_roll(
    roll: np.ndarray,
    *,
    highlight_mask: np.ndarray | None = None,
    scale: int = 4,
    threshold: float = EXACT_THRESHOLD,
) -> Image.Image:
    """A picture of the roll for people: ``(W * scale) x (64 * scale)`` RGB.

    Dark background, faint bar lines every 16 columns and faint lines under each C, notes in light blue with
    brightness from velocity and a brighter onset column. Cells where ``highlight_mask`` (``[64, W]`` bool,
    True = generated) is set get a warm background tint and their notes are drawn in orange.
    """
    roll = check_roll(roll)
    width = roll.shape[2]
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    mask = np.zeros((ROLL_PITCHES, width), dtype=bool)
    if highlight_mask is not None:
        highlight_mask = np.asarray(highlight_mask, dtype=bool)
        if highlight_mask.shape != mask.shape:
            raise ValueError(f"highlight_mask must have shape {list(mask.shape)}, got {list(highlight_mask.shape)}")
        mask = highlight_mask

    img = np.broadcast_to(_BACKGROUND, (ROLL_PITCHES, width, 3)).copy()
    img[mask] = _MASK_TINT
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    c_rows = [pitch_to_row(p) for p in range(PITCH_LOW, PITCH_HIGH + 1) if p % 12 == 0]
    img[[r * scale + scale - 1 for r in c_rows]] = _OCTAVE_LINE
    img[:, :: STEPS_PER_BAR * scale] = _BAR_LINE

    sustain = np.clip(roll[SUSTAIN], 0.0, 1.0)
    onset = np.clip(roll[ONSET], 0.0, 1.0)
    on = (sustain >= threshold) | (onset >= threshold)
    brightness = 0.35 + 0.65 * np.maximum(sustain, onset)
    brightness = np.where(onset >= threshold, np.minimum(1.0, brightness + 0.25), brightness * 0.85)
    colour = np.where(mask[..., None], _GENERATED, _NOTE) * brightness[..., None]
    cells = np.repeat(np.repeat(on, scale, axis=0), scale, axis=1)
    colour = np.repeat(np.repeat(colour, scale, axis=0), scale, axis=1)
    img[cells] = colour[cells]
    if scale >= 3:  # a dark pixel row between vertically adjacent notes keeps chords readable
        gap = np.zeros_like(cells)
        gap[scale - 1 :: scale] = True
        img[cells & gap] *= 0.6
    return Image.fromarray(np.rint(img).astype(np.uint8))
