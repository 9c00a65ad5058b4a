"""The experiment sampler of benchmarks/repaint_variants.py reduces to the library's RePaint at jump 1."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from repaint_variants import jump_inpaint, main, make_mask  # noqa: E402

from genmodels.diffusion.sampling import get_sigmas_karras, sample_inpaint  # noqa: E402


def _denoise(x, sigma):
    """A smooth, input-dependent toy denoiser (shrinks toward a fixed pattern)."""
    sigma = torch.as_tensor(sigma).reshape(-1, *([1] * (x.ndim - 1)))
    target = torch.linspace(-1, 1, x[0].numel()).reshape(x.shape[1:])
    return (x + sigma**2 * target) / (1 + sigma**2) + 0.05 * torch.tanh(x)


def test_jump_one_is_the_library_sampler_and_jumps_keep_the_known_region():
    known = torch.rand(2, 2, 8, 16) * 2 - 1
    mask = torch.zeros(2, 2, 8, 16)
    mask[..., 4:12] = 1
    sigmas = get_sigmas_karras(6, 0.01, 80.0, 7.0)
    for r in (1, 3):
        lib = sample_inpaint(_denoise, known, mask, num_steps=6, repaint=r,
                             generator=torch.Generator().manual_seed(3)).sample
        mine = jump_inpaint(_denoise, known, mask, num_steps=6, repaint=r, jump=1, renoise=1.0, sigmas=sigmas,
                            generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(mine, lib)
    jumped = jump_inpaint(_denoise, known, mask, num_steps=6, repaint=2, jump=4, renoise=1.0, sigmas=sigmas,
                          generator=torch.Generator().manual_seed(3))
    assert torch.equal(jumped[..., :4], known[..., :4]) and torch.equal(jumped[..., 12:], known[..., 12:])
    assert not torch.allclose(jumped, lib)


def test_mask_shapes_cover_bars_three_to_six_and_sit_where_they_say():
    roll = np.zeros((2, 64, 128), np.float32)
    roll[:, 30:34, 0:40] = 0.5  # notes on rows 30-33 (row 0 is the highest pitch)
    bars = make_mask(roll, "bars")
    assert bars[:, 32:96].all() and not bars[:, :32].any() and not bars[:, 96:].any()
    band = make_mask(roll, "band")
    assert band.sum(0)[32:96].tolist() == [16] * 64 and band[30:34, 32:96].all()  # 16 rows around the notes
    above = make_mask(roll, "above")
    assert above[18:30, 32:96].all() and above.sum() == 12 * 64  # the 12 rows just above the highest note
    rising = make_mask(roll, "rising")
    tops = [int(np.argmax(rising[:, c])) for c in range(32, 96)]
    assert rising.sum(0)[32:96].tolist() == [8] * 64 and tops[-1] < tops[0] and tops == sorted(tops, reverse=True)
    with pytest.raises(ValueError, match="unknown mask"):
        make_mask(roll, "circle")


def test_an_unknown_variant_name_is_refused_before_any_model_is_loaded(capsys):
    with pytest.raises(SystemExit):
        main(["--only", "jump 4", "no such variant", "--model", "/nonexistent"])
    assert "unknown variant(s) ['no such variant']" in capsys.readouterr().err
