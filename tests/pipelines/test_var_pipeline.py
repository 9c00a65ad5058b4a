"""VARPipeline: text to image, zero-shot in- / outpainting, FastVAR, input checks, save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmodels.loading import load_pipeline
from genmodels.pipelines.var import VARPipeline
from genmodels.var.var import FastVARConfig
from tests.search.helpers import tiny_var_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_var_pipeline(init_adaln_gamma=1.0)


def test_generates_seeded_images_of_the_model_size(pipe):
    out = pipe(["a red circle", "a blue square"], guidance_scale=3.0, top_k=10, top_p=0.9,
               generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 2 and out.images[0].size == (32, 32) and out.nfe == 3
    again = pipe(["a red circle", "a blue square"], guidance_scale=3.0, top_k=10, top_p=0.9,
                 generator=torch.Generator().manual_seed(0))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, again.images))


def test_one_generator_per_prompt_is_batch_invariant(pipe):
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    both = pipe(["a red circle", "a blue square"], generator=gens(), output_type="np").images
    alone = pipe(["a blue square"], generator=[torch.Generator().manual_seed(6)], output_type="np").images
    assert np.array_equal(both[1], alone[0])


def test_inpainting_and_outpainting_keep_known_pixels_exactly(pipe):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    inpaint = np.zeros((32, 32), dtype=bool)
    inpaint[8:20, 8:20] = True
    outpaint = np.ones((32, 32), dtype=bool)
    outpaint[8:24, 8:24] = False
    for mask in (inpaint, outpaint):
        out = pipe("a red circle", image=image, mask=mask, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images[0]
        assert np.array_equal(out[~mask], image[~mask])
        assert not np.array_equal(out[mask], image[mask])
    ids, keep = pipe.known_tokens(image, inpaint, 2, "cpu")
    assert keep.shape == (2, 4, 4) and keep.sum() == 2 * 12  # cells touching the square are generated


def test_fastvar_runs_and_skip_last_costs_one_pass_less(pipe):
    out = pipe("a red circle", fastvar=FastVARConfig(prune={-1: 0.5}), generator=torch.Generator().manual_seed(0))
    assert out.nfe == 3
    out = pipe("a red circle", fastvar=FastVARConfig(skip_last=1), generator=torch.Generator().manual_seed(0))
    assert out.nfe == 2 and out.images[0].size == (32, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": ""}, "empty"),
    ({"prompt": []}, "non-empty"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"height": 64}, "height"),
    ({"output_type": "latent"}, "output_type"),
    ({"image": np.zeros((32, 32, 3), np.uint8)}, "both"),
    ({"image": np.zeros((16, 16, 3), np.uint8), "mask": np.ones((16, 16), bool)}, "32×32"),
    ({"image": np.zeros((32, 32, 3), np.uint8), "mask": np.zeros((32, 32), bool)}, "covers nothing"),
    ({"fastvar": FastVARConfig(prune={0: 0.5})}, "first scale"),
    ({"fastvar": "-1:0.5"}, "FastVARConfig"),
])
def test_bad_inputs_raise_clear_errors(pipe, kwargs, match):
    kwargs = {"prompt": "a red circle", **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    loaded = load_pipeline(VARPipeline, tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    a = pipe("a red circle", generator=torch.Generator().manual_seed(3), output_type="np").images
    b = loaded("a red circle", generator=torch.Generator().manual_seed(3), output_type="np").images
    assert np.array_equal(a, b)
