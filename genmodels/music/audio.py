"""MIDI -> audio: FluidSynth when it is installed with a General MIDI soundfont, else a numpy synth.

Audio is a float32 mono array ``[T]`` in ``[-1, 1]`` at ``sr`` samples per second, peak-normalised to 0.9
(a silent piece stays all zeros). Its length is ``ceil((end_time + TAIL_S) * sr)`` samples, ``end_time``
being the last note-off in seconds, so release tails are not cut off.

The fallback synth is additive: each note is a few harmonics under an exponentially decaying envelope with a
short attack and release, which sounds like a plucked string or a soft piano. Nothing is ever downloaded:
FluidSynth is used only when ``pyfluidsynth`` imports and a soundfont exists at one of ``SOUNDFONT_PATHS`` (or
at ``$LINGEN_SOUNDFONT``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pretty_midi
from scipy.io import wavfile

from genmodels.io import atomic_path

TAIL_S = 0.25  # seconds of audio kept after the last note-off, for release tails
PEAK = 0.9
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)

_HARMONICS = np.array([1.0, 0.5, 0.28, 0.14, 0.07])  # relative amplitudes of partials 1..5
_ATTACK_S = 0.005
_RELEASE_S = 0.08


def find_soundfont() -> Path | None:
    """The first General MIDI soundfont found (``$LINGEN_SOUNDFONT`` first), or None."""
    candidates = [os.environ.get("LINGEN_SOUNDFONT", ""), *SOUNDFONT_PATHS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _fluidsynth_available() -> bool:
    try:
        import fluidsynth  # noqa: F401
    except Exception:  # ImportError, or OSError when the shared library is missing
        return False
    return True


def _note_wave(pitch: int, velocity: int, duration_s: float, sr: int) -> np.ndarray:
    """One note: harmonics of ``pitch`` with attack, exponential decay and a release after ``duration_s``."""
    freq = pretty_midi.note_number_to_hz(pitch)
    n = int(math.ceil((duration_s + _RELEASE_S) * sr))
    t = np.arange(n, dtype=np.float32) / sr
    partials = np.arange(1, len(_HARMONICS) + 1)
    audible = partials * freq < sr / 2  # drop partials above Nyquist (aliasing)
    phases = 2 * np.pi * freq * t[:, None] * partials[None, audible]
    wave = np.sin(phases) @ _HARMONICS[audible]
    decay_s = 1.2 * (261.6 / freq) ** 0.5  # low notes ring longer, as on a piano
    env = np.exp(-t / decay_s) * np.minimum(1.0, t / _ATTACK_S)
    release = np.clip((duration_s + _RELEASE_S - t) / _RELEASE_S, 0.0, 1.0)
    return (wave * env * release * (velocity / 127.0)).astype(np.float32)


def synthesize_additive(pm: pretty_midi.PrettyMIDI, sr: int) -> np.ndarray:
    """Render all non-drum notes of ``pm`` with the numpy synth (not normalised)."""
    length = int(math.ceil((pm.get_end_time() + TAIL_S) * sr))
    audio = np.zeros(length, dtype=np.float32)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for note in inst.notes:
            start = int(round(note.start * sr))
            wave = _note_wave(note.pitch, note.velocity, max(note.end - note.start, 0.0), sr)
            wave = wave[: max(0, length - start)]
            audio[start : start + wave.size] += wave
    return audio


def render_audio(pm: pretty_midi.PrettyMIDI, sr: int = 22050) -> np.ndarray:
    """Render ``pm`` to mono float32 audio ``[T]`` in [-1, 1], peak 0.9 (see the module docstring)."""
    length = int(math.ceil((pm.get_end_time() + TAIL_S) * sr))
    soundfont = find_soundfont()
    audio = None
    if soundfont is not None and _fluidsynth_available():
        try:
            audio = pm.fluidsynth(fs=sr, sf2_path=str(soundfont)).astype(np.float32)
        except Exception:  # a broken FluidSynth install falls back to the numpy synth
            audio = None
    if audio is None:
        audio = synthesize_additive(pm, sr)
    audio = np.pad(audio[:length], (0, max(0, length - audio.size)))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0:
        audio *= PEAK / peak
    return audio.astype(np.float32, copy=False)


def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> Path:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape [T], got {list(audio.shape)}")
    pcm = np.rint(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, sr, pcm)
    return path
