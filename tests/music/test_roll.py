"""The piano-roll format: MIDI <-> roll <-> PNG, quantisation, merging and error handling."""

from __future__ import annotations

import io
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genmodels.music.roll import (
    MAX_MIDI_BYTES,
    MODEL_THRESHOLD,
    ROLL_PITCHES,
    MidiError,
    RollNotes,
    empty_roll,
    image_to_roll,
    load_midi,
    midi_to_roll,
    notes_to_roll,
    pitch_to_row,
    render_roll,
    roll_notes,
    roll_to_image,
    roll_to_midi,
    row_to_pitch,
)

Note = tuple[int, int, int, int]  # (pitch, start, end, velocity), times in 16th notes


def make_pm(notes: list[Note], bpm: float = 120.0, program: int = 0) -> pretty_midi.PrettyMIDI:
    step = 60.0 / bpm / 4
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s * step, end=e * step) for p, s, e, v in notes]
    pm.instruments.append(inst)
    return pm


def grid_notes(pm: pretty_midi.PrettyMIDI, bpm: float) -> list[Note]:
    """Notes of ``pm`` in 16ths at ``bpm``, asserting they sit exactly on the grid."""
    step = 60.0 / bpm / 4
    out = []
    for inst in pm.instruments:
        for n in inst.notes:
            s, e = round(n.start / step), round(n.end / step)
            assert abs(n.start - s * step) < 1e-6 and abs(n.end - e * step) < 1e-6
            out.append((n.pitch, s, e, n.velocity))
    return sorted(out)


def to_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Pitch rows


def test_row_zero_is_the_highest_pitch():
    assert pitch_to_row(91) == 0 and pitch_to_row(28) == 63 and pitch_to_row(60) == 31
    assert [row_to_pitch(pitch_to_row(p)) for p in range(28, 92)] == list(range(28, 92))
    with pytest.raises(ValueError, match="outside"):
        pitch_to_row(27)
    with pytest.raises(ValueError, match="outside"):
        row_to_pitch(64)


# ---------------------------------------------------------------------------------------------------------
# MIDI -> roll


def test_midi_to_roll_writes_onset_and_sustain_channels():
    info = midi_to_roll(make_pm([(60, 2, 6, 100), (91, 0, 1, 127)]))
    roll = info.roll
    assert roll.shape == (2, ROLL_PITCHES, 6) and roll.dtype == np.float32
    expected = np.zeros_like(roll)
    expected[0, 31, 2] = expected[1, 31, 2:6] = 100 / 127
    expected[0, 0, 0] = expected[1, 0, 0] = 1.0
    np.testing.assert_array_equal(roll, expected)
    assert info.bpm == 120.0 and info.n_notes == 2


def test_unquantised_times_round_start_and_duration_separately():
    # 120 bpm: a 16th is 0.125 s. Start 0.16 s = 1.28 16ths -> 1; duration 0.31 s = 2.48 -> 2, so the
    # note ends at column 3 (rounding the end time itself, 3.76, would give 4). A 10 ms note lasts one column.
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(90, 60, 0.16, 0.47), pretty_midi.Note(90, 64, 1.01, 1.02)]
    pm.instruments.append(inst)
    notes = roll_notes(midi_to_roll(pm).roll)
    assert list(zip(notes.pitch, notes.start, notes.end)) == [(60, 1, 3), (64, 8, 9)]


def test_tempo_changes_are_followed():
    # 120 bpm for two beats, then 60 bpm. The second note starts at 1.0 s (beat 2) and lasts one beat
    # (1.0 s): columns 8..12. A constant 120 bpm reading would end it at column 16.
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track += [
        mido.MetaMessage("set_tempo", tempo=500_000, time=0),
        mido.Message("note_on", note=60, velocity=80, time=0),
        mido.Message("note_off", note=60, velocity=0, time=480),
        mido.MetaMessage("set_tempo", tempo=1_000_000, time=480),
        mido.Message("note_on", note=62, velocity=80, time=0),
        mido.Message("note_off", note=62, velocity=0, time=480),
    ]
    mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    info = midi_to_roll(buf.getvalue())
    notes = roll_notes(info.roll)
    assert list(zip(notes.pitch, notes.start, notes.end)) == [(60, 0, 4), (62, 8, 12)]
    assert info.bpm == pytest.approx(120.0)


def test_instruments_merge_louder_wins_and_drums_are_dropped():
    pm = make_pm([(60, 0, 4, 50), (64, 0, 8, 70)])
    violin = pretty_midi.Instrument(program=40)
    violin.notes = [pretty_midi.Note(110, 60, 0.0, 0.25), pretty_midi.Note(70, 67, 0.0, 0.5)]
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.125)]
    pm.instruments += [violin, drums]
    info = midi_to_roll(pm)
    notes = roll_notes(info.roll)
    assert sorted(zip(notes.pitch, notes.start, notes.end, notes.velocity)) == [
        (60, 0, 4, 110),  # same pitch and onset in two instruments: one note, the louder velocity
        (64, 0, 8, 70),
        (67, 0, 4, 70),
    ]
    assert (info.n_notes, info.n_drum_dropped, info.n_merged) == (4, 1, 1)


def test_overlapping_same_pitch_notes_are_cut_at_the_later_onset():
    info = midi_to_roll(make_pm([(60, 0, 8, 50), (60, 4, 6, 100)]))
    notes = roll_notes(info.roll)
    # The pitch keeps sounding until the first note's end: the second note inherits columns 6..8.
    assert list(zip(notes.start, notes.end, notes.velocity)) == [(0, 4, 50), (4, 8, 100)]


def test_out_of_range_pitches_move_by_octaves():
    info = midi_to_roll(make_pm([(100, 0, 2, 90), (20, 0, 2, 90), (27, 4, 6, 90), (92, 4, 6, 90)]))
    assert sorted(roll_notes(info.roll).pitch.tolist()) == [32, 39, 80, 88]
    assert info.n_folded == 4


def test_drum_only_file_raises_midi_error():
    pm = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.125)]
    pm.instruments.append(drums)
    with pytest.raises(MidiError, match="no non-drum notes"):
        midi_to_roll(pm)


# ---------------------------------------------------------------------------------------------------------
# Roll -> MIDI decoding rules


def test_sustain_without_onset_starts_a_note_unless_onset_is_required():
    roll = empty_roll(8)
    roll[1, 31, 2:5] = 0.5
    roll[0, 10, 6] = roll[1, 10, 6] = 1.0
    notes = roll_notes(roll)
    assert list(zip(notes.pitch, notes.start, notes.end, notes.velocity)) == [(60, 2, 5, 64), (81, 6, 7, 127)]
    strict = roll_notes(roll, require_onset=True)
    assert strict.pitch.tolist() == [81]


def test_onset_pixel_without_sustain_is_a_one_column_note():
    roll = empty_roll(4)
    roll[0, 31, 1] = 0.5
    notes = roll_notes(roll)
    assert list(zip(notes.start, notes.end, notes.velocity)) == [(1, 2, 64)]


def test_model_threshold_ignores_background_noise():
    rng = np.random.default_rng(0)
    roll = rng.uniform(0.0, 0.15, size=(2, ROLL_PITCHES, 32)).astype(np.float32)
    roll[0, 20, 4] = 0.9
    roll[1, 20, 4:12] = rng.uniform(0.6, 0.9, size=8)
    pm = roll_to_midi(roll, bpm=120.0, threshold=MODEL_THRESHOLD)
    [note] = pm.instruments[0].notes
    assert (note.pitch, note.velocity) == (71, 114)
    assert (note.start, note.end) == pytest.approx((0.5, 1.5))


def test_roll_to_midi_uses_bpm_and_program():
    pm = roll_to_midi(notes_to_roll(RollNotes(*np.array([[60], [4], [8], [90]]))), bpm=60.0, program=40)
    assert pm.instruments[0].program == 40
    note = pm.instruments[0].notes[0]
    assert (note.start, note.end, note.velocity) == pytest.approx((1.0, 2.0, 90))
    assert pm.get_tempo_changes()[1][0] == pytest.approx(60.0)


def test_roll_with_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"\[2, 64, W\]"):
        roll_to_midi(np.zeros((2, 128, 16)))


# ---------------------------------------------------------------------------------------------------------
# Round trips


def canonical_quantised_notes(pm: pretty_midi.PrettyMIDI, bpm: float) -> list[list[Note]]:
    """Per instrument, the notes of ``pm`` snapped to the 16th grid, folded into 28..91, with same-pitch
    duplicates removed and overlaps cut: the preconditions of the exact round trip."""
    step = 60.0 / bpm / 4
    tagged = []
    for i, inst in enumerate(pm.instruments):
        for n in inst.notes:
            s = round(n.start / step)
            d = max(1, round((n.end - n.start) / step))
            p = n.pitch
            while p < 28:
                p += 12
            while p > 91:
                p -= 12
            tagged.append([p, s, s + d, n.velocity, i])
    tagged.sort(key=lambda t: (t[0], t[1], -t[2]))
    kept: list[list[int]] = []
    for note in tagged:
        if kept and kept[-1][0] == note[0]:
            prev = kept[-1]
            if prev[1] == note[1]:  # same onset: keep the first (longest)
                continue
            prev[2] = min(prev[2], note[1])
        kept.append(note)
    per_inst: list[list[Note]] = [[] for _ in pm.instruments]
    for p, s, e, v, i in kept:
        per_inst[i].append((p, s, e, v))
    return per_inst


def quantised_pm(per_inst: list[list[Note]], bpm: float) -> pretty_midi.PrettyMIDI:
    pm = make_pm(per_inst[0], bpm)
    for notes in per_inst[1:]:
        pm.instruments.append(make_pm(notes, bpm).instruments[0])
    return pm


CORPUS_PIECES = [
    ("bach/bwv269", None),
    ("bach/bwv347", None),
    ("bach/bwv66.6", None),
    ("essenFolksong/altdeu10", 3),
    ("ryansMammoth/7thRegimentReel", None),
]


@pytest.fixture(scope="module")
def corpus_midi_files(tmp_path_factory) -> list[Path]:
    from music21 import corpus

    folder = tmp_path_factory.mktemp("corpus_midi")
    paths = []
    for name, number in CORPUS_PIECES:
        score = corpus.parse(name, number=number) if number is not None else corpus.parse(name)
        paths.append(Path(score.write("midi", fp=folder / f"{name.replace('/', '_')}.mid")))
    return paths


def test_corpus_pieces_survive_midi_roll_midi_exactly(corpus_midi_files, tmp_path):
    for path in corpus_midi_files:
        source = pretty_midi.PrettyMIDI(str(path))
        assert len(source.get_tempo_changes()[1]) == 1, f"{path.name} has tempo changes"
        bpm = float(source.get_tempo_changes()[1][0])
        per_inst = canonical_quantised_notes(source, bpm)
        quantised_path = tmp_path / path.name
        quantised_pm(per_inst, bpm).write(str(quantised_path))

        info = midi_to_roll(quantised_path)
        back = roll_to_midi(info.roll, bpm=info.bpm)
        expected = sorted(n for notes in per_inst for n in notes)
        assert len(expected) > 20
        assert grid_notes(back, info.bpm) == expected, path.name


note_lists = st.lists(
    st.tuples(
        st.integers(28, 91),  # pitch
        st.integers(0, 95),  # start
        st.integers(1, 24),  # duration
        st.integers(1, 127),  # velocity
    ),
    min_size=1,
    max_size=40,
)


def without_same_pitch_overlaps(raw: list[tuple[int, int, int, int]]) -> list[Note]:
    taken: dict[int, np.ndarray] = {}
    notes = []
    for p, s, d, v in raw:
        busy = taken.setdefault(p, np.zeros(200, dtype=bool))
        if not busy[s : s + d].any():
            busy[s : s + d] = True
            notes.append((p, s, s + d, v))
    return sorted(notes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=note_lists, bpm=st.floats(40.0, 240.0))
def test_random_quantised_pieces_survive_midi_roll_midi_and_png(raw, bpm):
    notes = without_same_pitch_overlaps(raw)
    info = midi_to_roll(make_pm(notes, bpm))
    assert grid_notes(roll_to_midi(info.roll, bpm=bpm), bpm) == notes

    buf = io.BytesIO()
    roll_to_image(info.roll).save(buf, format="PNG")
    np.testing.assert_array_equal(image_to_roll(Image.open(buf)), info.roll)


def test_round_trip_through_a_midi_file_on_disk(tmp_path):
    notes = [(28, 0, 1, 1), (91, 1, 17, 127), (60, 3, 5, 64), (60, 5, 6, 65)]  # adjacent repeats separate
    path = tmp_path / "piece.mid"
    make_pm(notes, bpm=97.0).write(str(path))
    info = midi_to_roll(path)
    assert info.bpm == pytest.approx(97.0, rel=1e-5)
    assert grid_notes(roll_to_midi(info.roll, bpm=97.0), 97.0) == sorted(notes)


# ---------------------------------------------------------------------------------------------------------
# PNG


def test_png_stores_velocity_as_twice_the_velocity():
    roll = midi_to_roll(make_pm([(60, 0, 2, 100)])).roll
    rgb = np.asarray(roll_to_image(roll))
    assert rgb.shape == (64, 2, 3)
    assert rgb[31, 0].tolist() == [200, 200, 0] and rgb[31, 1].tolist() == [0, 200, 0]


def test_any_png_survives_png_roll_png(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, size=(64, 40, 3), dtype=np.uint8)
    pixels[..., 2] = 0
    pixels[0, 0, :2] = 255  # level 255 reads 1.0 and writes back as 254
    path = tmp_path / "roll.png"
    Image.fromarray(pixels).save(path)
    back = np.asarray(roll_to_image(image_to_roll(Image.open(path))))
    expected = pixels.copy()
    expected[0, 0, :2] = 254
    np.testing.assert_array_equal(back, expected)


def test_image_to_roll_accepts_other_modes_and_checks_height():
    assert image_to_roll(Image.new("L", (16, 64), 127)).shape == (2, 64, 16)
    with pytest.raises(ValueError, match="64 pixels tall"):
        image_to_roll(Image.new("RGB", (16, 128)))


def test_render_roll_highlights_generated_notes():
    roll = midi_to_roll(make_pm([(60, 0, 4, 100), (72, 8, 12, 100)])).roll
    mask = np.zeros((64, roll.shape[2]), dtype=bool)
    mask[:, 8:] = True
    img = np.asarray(render_roll(roll, highlight_mask=mask, scale=4))
    assert img.shape == (64 * 4, 12 * 4, 3)
    given_note, generated_note = img[31 * 4 + 1, 2 * 4 + 1], img[19 * 4 + 1, 10 * 4 + 1]
    assert given_note[2] > given_note[0]  # blue
    assert generated_note[0] > generated_note[2]  # orange
    with pytest.raises(ValueError, match="highlight_mask"):
        render_roll(roll, highlight_mask=np.zeros((64, 3), dtype=bool))


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_midi_error_is_a_value_error():
    assert issubclass(MidiError, ValueError)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage", "corrupt"),
        (b"This is a text file, not MIDI.\n", "not a Standard MIDI File"),
        (b"", "not a Standard MIDI File"),
    ],
)
def test_unusable_bytes_raise_midi_error(data, message):
    with pytest.raises(MidiError, match=message):
        load_midi(data)
    with pytest.raises(MidiError, match=message):
        midi_to_roll(data)


def test_midi_without_notes_raises_midi_error(tmp_path):
    path = tmp_path / "empty.mid"
    pretty_midi.PrettyMIDI().write(str(path))
    with pytest.raises(MidiError, match="no notes"):
        load_midi(path)


def test_text_file_and_missing_file_raise_midi_error(tmp_path):
    text = tmp_path / "notes.mid"
    text.write_text("C D E F G\n")
    with pytest.raises(MidiError, match="not a Standard MIDI File"):
        load_midi(text)
    with pytest.raises(MidiError, match="cannot read"):
        load_midi(tmp_path / "missing.mid")


def test_oversized_file_raises_midi_error(tmp_path):
    path = tmp_path / "big.mid"
    path.write_bytes(b"MThd" + bytes(MAX_MIDI_BYTES))
    with pytest.raises(MidiError, match="byte limit"):
        load_midi(path)
    with pytest.raises(MidiError, match="byte limit"):
        load_midi(path.read_bytes())


def test_valid_bytes_load(tmp_path):
    pm = load_midi(to_bytes(make_pm([(60, 0, 4, 100)])))
    assert [n.pitch for n in pm.instruments[0].notes] == [60]
