"""MIDI -> audio rendering and WAV writing."""

from __future__ import annotations

import math

import numpy as np
import pretty_midi
import pytest
from scipy.io import wavfile

from genmodels.music.audio import PEAK, TAIL_S, render_audio, write_wav
from genmodels.music.roll import empty_roll, roll_to_midi


def short_piece() -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(100, 60, 0.0, 0.5), pretty_midi.Note(80, 64, 0.5, 1.0)]
    pm.instruments.append(inst)
    return pm


def test_render_audio_is_non_silent_with_the_documented_length_and_peak():
    sr = 8000
    audio = render_audio(short_piece(), sr=sr)
    assert audio.dtype == np.float32
    assert audio.shape == (math.ceil((1.0 + TAIL_S) * sr),)
    assert np.max(np.abs(audio)) == pytest.approx(PEAK, rel=1e-6)
    # both notes sound: energy in the first and the second half-second
    assert np.sqrt(np.mean(audio[: sr // 2] ** 2)) > 0.05
    assert np.sqrt(np.mean(audio[sr // 2 : sr] ** 2)) > 0.05


def test_silent_roll_renders_zeros():
    audio = render_audio(roll_to_midi(empty_roll(32)), sr=8000)
    assert audio.size > 0 and not audio.any()


def test_write_wav_writes_int16_atomically(tmp_path):
    audio = render_audio(short_piece(), sr=8000)
    path = write_wav(tmp_path / "out" / "piece.wav", audio, 8000)
    sr, data = wavfile.read(path)
    assert sr == 8000 and data.dtype == np.int16 and data.shape == audio.shape
    np.testing.assert_allclose(data / 32767, audio, atol=1 / 32767)
    assert [p.name for p in path.parent.iterdir()] == ["piece.wav"]  # no temp file left behind
