"""Piano-roll inpainting pipeline and CLI with a tiny untrained HDiT (behaviour, not musical quality)."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
import torch

from genmodels.cli import main as cli_main
from genmodels.diffusion.sampling import make_edm_scheduler
from genmodels.hdit import HDiT
from genmodels.music import midi_to_roll
from genmodels.pipelines import PianoRollInpaintPipeline
from genmodels.pipelines.pianoroll import bar_windows
from genmodels.pipelines.pianoroll_io import mask_from_image, rect_mask


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model = HDiT(**{**HDiT.tiny_config(), "sample_size": [64, 32]})
    return PianoRollInpaintPipeline(transformer=model.eval(), scheduler=make_edm_scheduler("euler"))


def _roll(width=64):
    roll = np.zeros((2, 64, width), np.float32)
    for c in range(0, width, 4):
        roll[0, 30 + (c // 4) % 5, c] = 90 / 127
        roll[1, 30 + (c // 4) % 5, c : c + 2] = 90 / 127
    return roll


def test_outside_the_mask_nothing_changes(pipe):
    roll = _roll(64)
    mask = rect_mask(64, (2, 3), (50, 80))
    out = pipe(roll, mask, num_inference_steps=4, repaint=2, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert out.candidates.shape == (3, 2, 64, 64)
    for cand in out.candidates:
        assert np.array_equal(cand[:, ~mask], roll[:, ~mask])
    assert out.nfe == 4 * 2 * len(bar_windows(mask, 32))


def test_busyness_percentile_picks_by_notes_in_mask(pipe):
    roll, mask = _roll(32), rect_mask(32, (1, 2), (40, 70))
    kw = dict(num_inference_steps=3, num_samples=4)
    busiest = pipe(roll, mask, busyness=100, generator=torch.Generator().manual_seed(3), **kw)
    quietest = pipe(roll, mask, busyness=0, generator=torch.Generator().manual_seed(3), **kw)
    assert busiest.notes_in_mask == quietest.notes_in_mask
    assert busiest.notes_in_mask[busiest.chosen] == max(busiest.notes_in_mask)
    assert quietest.notes_in_mask[quietest.chosen] == min(quietest.notes_in_mask)


def test_same_seed_same_result_after_save_and_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    loaded = PianoRollInpaintPipeline.from_pretrained(str(tmp_path / "p"))
    roll, mask = _roll(32), rect_mask(32, (1, 1), (60, 70))
    a = pipe(roll, mask, num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    b = loaded(roll, mask, num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(a.roll, b.roll)


@pytest.mark.parametrize("width,mask_cols", [(256, (64, 128)), (256, (0, 256)), (256, (200, 256)), (48, (0, 16))])
def test_windows_cover_every_masked_column(width, mask_cols):
    mask = np.zeros((64, width), bool)
    mask[:, mask_cols[0] : mask_cols[1]] = True
    starts = bar_windows(mask, 128)
    covered = np.zeros(width, bool)
    for s in starts:
        assert s % 16 == 0 and s + min(128, width) <= width
        covered[s : s + 128] = True
    assert covered[mask.any(0)].all()


@pytest.mark.parametrize("kwargs,message", [
    ({"mask": np.zeros((64, 32), bool)}, "covers nothing"),
    ({"mask": np.ones((64, 16), bool)}, "mask must be"),
    ({"repaint": 0}, "repaint"),
    ({"repaint": 11}, "repaint"),
    ({"num_samples": 0}, "num_samples"),
    ({"busyness": float("nan")}, "busyness"),
    ({"num_inference_steps": 2.5}, "integer"),
    ({"roll": np.zeros((2, 64, 40), np.float32), "mask": np.ones((64, 40), bool)}, "multiple of 16"),
    ({"roll": np.full((2, 64, 32), np.nan, np.float32)}, "NaN"),
])
def test_bad_inputs_raise_clear_errors(pipe, kwargs, message):
    args = {"roll": _roll(32), "mask": np.ones((64, 32), bool), **kwargs}
    roll, mask = args.pop("roll"), args.pop("mask")
    with pytest.raises(ValueError, match=message):
        pipe(roll, mask, **{"num_inference_steps": 3, **args})


def test_mask_from_painted_image_at_display_scale():
    from PIL import Image

    img = np.zeros((64 * 4, 32 * 4, 4), np.uint8)
    img[8:16, 40:48] = (255, 255, 255, 255)  # rows 2..3, columns 10..11 at scale 4
    mask = mask_from_image(Image.fromarray(img, "RGBA"), 32)
    assert mask.sum() == 4 and mask[2:4, 10:12].all()
    with pytest.raises(ValueError, match="integer multiple"):
        mask_from_image(Image.new("RGB", (33, 64)), 32)


def _midi_file(path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(0)
    for i in range(32):
        inst.notes.append(pretty_midi.Note(80, 60 + i % 8, i * 0.25, i * 0.25 + 0.25))
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


def test_cli_writes_image_midi_audio_and_manifest(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    midi = _midi_file(tmp_path / "in.mid")
    out = tmp_path / "out"
    rc = cli_main(["pianoroll", "inpaint", "--midi", str(midi), "--bars", "2-3", "--pitches", "55-75",
                   "--model", str(tmp_path / "model"), "--steps", "3", "--repaint", "1", "--samples", "2",
                   "--out", str(out)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unchanged_outside_mask"] and manifest["nfe"] == 3 and len(manifest["notes_in_mask"]) == 2
    # the MIDI written out has exactly the input's notes outside the mask
    original = midi_to_roll(str(midi)).roll
    decoded = midi_to_roll(pretty_midi.PrettyMIDI(str(out / "result.mid"))).roll
    width = original.shape[2]
    padded = np.zeros_like(original)
    padded[:, :, : min(width, decoded.shape[2])] = decoded[:, :, :width]
    keep = ~rect_mask(manifest["width_columns"], (2, 3), (55, 75))[:, :width]
    assert np.array_equal(padded[:, keep], original[:, keep])
    assert (out / "result.png").stat().st_size > 0 and (out / "result.wav").stat().st_size > 1000


def test_cli_rejects_corrupt_midi_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00garbage")
    out = tmp_path / "out"
    rc = cli_main(["pianoroll", "inpaint", "--midi", str(bad), "--bars", "1-2", "--out", str(out)])
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


class _Planted:
    """Unpickling this object creates a marker file: proof that code in a checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_without_being_run(pipe, tmp_path):
    import pickle

    from genmodels.loading import UnsafeCheckpointError, load_pipeline

    folder = tmp_path / "evil"
    pipe.save_pretrained(folder)
    weights = next((folder / "transformer").glob("*.safetensors"))
    weights.unlink()
    marker = tmp_path / "pwned"
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        load_pipeline(PianoRollInpaintPipeline, folder)
    assert not marker.exists()
    # the CLI refuses it too, with exit status 2
    midi = _midi_file(tmp_path / "in.mid")
    assert cli_main(["pianoroll", "inpaint", "--midi", str(midi), "--bars", "1-2", "--model", str(folder),
                     "--out", str(tmp_path / "out")]) == 2
    assert not marker.exists()


def test_malformed_config_is_refused(pipe, tmp_path):
    from genmodels.loading import UnsafeCheckpointError, check_pipeline_folder

    folder = tmp_path / "bad"
    pipe.save_pretrained(folder)
    (folder / "transformer" / "config.json").write_text("[1, 2")
    with pytest.raises(UnsafeCheckpointError, match="not valid JSON"):
        check_pipeline_folder(folder)
