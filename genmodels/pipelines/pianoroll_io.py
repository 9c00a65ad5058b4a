"""Inputs and outputs around the piano-roll pipeline, shared by the CLI and the app.

Masks: ``rect_mask`` (bars and a pitch range) or ``mask_from_image`` (a painted image: white = generate).
Outputs: a rendered PNG with generated notes highlighted, the roll as a re-loadable PNG, a MIDI file, a WAV
preview and a JSON manifest, each written atomically.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from genmodels.io import atomic_path
from genmodels.music import (
    PITCH_HIGH,
    PITCH_LOW,
    ROLL_PITCHES,
    STEPS_PER_BAR,
    midi_to_roll,
    render_audio,
    render_roll,
    roll_to_image,
    roll_to_midi,
    write_wav,
)
from genmodels.music.roll import MidiError, pitch_to_row

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # mask images above this are refused before decoding
# A file's tempo is kept for the outputs: outside this range the audio preview of even a short piece would run
# for hours (or last microseconds), so such files are refused.
MIN_BPM, MAX_BPM = 10.0, 1000.0


def parse_range(text: str, name: str) -> tuple[int, int]:
    """``"5-8"`` → (5, 8); ``"7"`` → (7, 7)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not m:
        raise ValueError(f"{name} must look like '5-8' or '7', got {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if lo > hi:
        raise ValueError(f"{name}: the range {lo}-{hi} is empty")
    return lo, hi


def load_roll(midi: str | Path | bytes, *, min_bars: int = 8) -> tuple[np.ndarray, float]:
    """A MIDI file as a roll padded with silence to whole bars (at least ``min_bars``), and its tempo.

    Raises ``MidiError`` (a ``ValueError``) for unusable files, including a tempo outside ``MIN_BPM..MAX_BPM``."""
    info = midi_to_roll(midi)
    if not MIN_BPM <= info.bpm <= MAX_BPM:
        raise MidiError(f"the MIDI file's tempo is {info.bpm:.4g} bpm; files from {MIN_BPM:g} to {MAX_BPM:g} bpm "
                        "are accepted")
    width = max(min_bars * STEPS_PER_BAR, -(-info.roll.shape[2] // STEPS_PER_BAR) * STEPS_PER_BAR)
    roll = np.zeros((2, ROLL_PITCHES, width), dtype=np.float32)
    roll[:, :, : info.roll.shape[2]] = info.roll
    return roll, info.bpm


def rect_mask(width: int, bars: tuple[int, int], pitches: tuple[int, int]) -> np.ndarray:
    """Mask ``[64, width]``: bars ``bars`` (1-based, inclusive) × MIDI pitches ``pitches`` (inclusive)."""
    n_bars = width // STEPS_PER_BAR
    if not 1 <= bars[0] <= bars[1] <= n_bars:
        raise ValueError(f"bars must lie in 1..{n_bars} for this roll, got {bars[0]}-{bars[1]}")
    if not PITCH_LOW <= pitches[0] <= pitches[1] <= PITCH_HIGH:
        raise ValueError(f"pitches must lie in {PITCH_LOW}..{PITCH_HIGH}, got {pitches[0]}-{pitches[1]}")
    mask = np.zeros((ROLL_PITCHES, width), dtype=bool)
    rows = slice(pitch_to_row(pitches[1]), pitch_to_row(pitches[0]) + 1)
    mask[rows, (bars[0] - 1) * STEPS_PER_BAR : bars[1] * STEPS_PER_BAR] = True
    return mask


def mask_from_image(image: Image.Image | np.ndarray, width: int) -> np.ndarray:
    """A painted mask → ``[64, width]`` bool (True where the paint is bright: white = generate).

    Accepts the roll's own size (``width × 64``) or an integer multiple of it (e.g. the rendered roll at
    scale 4); a cell counts as painted when any pixel of its block is. An RGBA image counts only opaque
    bright pixels (an editor layer with transparent background)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    w, h = image.size
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"mask image too large ({w}×{h})")
    if h % ROLL_PITCHES or w % width or h // ROLL_PITCHES != w // width:
        raise ValueError(f"mask image must be {width}×{ROLL_PITCHES} pixels or an integer multiple of it, "
                         f"got {w}×{h}")
    scale = h // ROLL_PITCHES
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    luma = rgba[..., :3].mean(-1) * (rgba[..., 3] / 255.0)
    painted = luma > 127
    return painted.reshape(ROLL_PITCHES, scale, width, scale).any(axis=(1, 3))


def midi_bytes(roll: np.ndarray, bpm: float) -> bytes:
    buf = io.BytesIO()
    roll_to_midi(roll, bpm=bpm).write(buf)
    return buf.getvalue()


def write_outputs(out_dir: str | Path, roll: np.ndarray, mask: np.ndarray, bpm: float, manifest: dict,
                  *, name: str = "result", sample_rate: int = 22050) -> dict[str, Path]:
    """Write ``name.png`` (rendered, generated notes highlighted), ``name_roll.png`` (the roll format),
    ``name.mid``, ``name.wav`` and ``manifest.json`` into ``out_dir``; returns their paths.

    All or nothing: every file is written to a temporary name first and renamed into place only when all five
    are complete, so an error (a full disk, say) leaves no partial output behind."""
    out = Path(out_dir)
    paths = {"image": out / f"{name}.png", "roll": out / f"{name}_roll.png", "midi": out / f"{name}.mid",
             "audio": out / f"{name}.wav", "manifest": out / "manifest.json"}
    created = not out.exists()
    try:
        with contextlib.ExitStack() as stack:  # on exit the temporary files are renamed (or, on error, removed)
            tmp = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
            render_roll(roll, highlight_mask=mask).save(tmp["image"], format="PNG")
            roll_to_image(roll).save(tmp["roll"], format="PNG")
            tmp["midi"].write_bytes(midi_bytes(roll, bpm))
            write_wav(tmp["audio"], render_audio(roll_to_midi(roll, bpm=bpm), sr=sample_rate), sample_rate)
            tmp["manifest"].write_text(json.dumps(manifest, indent=2))
    except BaseException:
        if created:  # the folder was made for these outputs: leave nothing behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return paths
