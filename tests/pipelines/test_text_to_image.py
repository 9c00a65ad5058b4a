"""TextToImagePipeline end to end on a tiny SanaDiT with a deterministic hashing text encoder (test double)."""

from __future__ import annotations

import zlib

import numpy as np
import PIL.Image
import pytest
import torch

from genmodels.diffusion.flow import make_flow_scheduler
from genmodels.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline
from genmodels.sana import SanaDiT


class HashTextEncoder:
    """Test double for the open_clip wrapper: each word maps to a fixed random vector (seeded by its CRC32);
    tokens are padded to the longest prompt, pooled is the mean over real tokens."""

    def __init__(self, dim: int = 32):
        self.dim = dim
        self.calls = 0

    def _word(self, word: str) -> torch.Tensor:
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))

    def encode(self, prompts: list[str]):
        self.calls += 1
        words = [p.lower().split() for p in prompts]
        length = max(len(w) for w in words)
        tokens = torch.zeros(len(prompts), length, self.dim)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = self._word(w)
            mask[i, : len(ws)] = True
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return tokens, mask, pooled


def _pipe(scheduler: str = "dpmsolver++") -> TextToImagePipeline:
    model = SanaDiT(**SanaDiT.tiny_config())
    with torch.no_grad():  # a non-trivial velocity field
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = TextToImagePipeline(transformer=model, scheduler=make_flow_scheduler(scheduler),
                               text_encoder=HashTextEncoder())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_generates_one_image_per_prompt_and_encodes_text_once():
    pipe = _pipe()
    steps = []
    out = pipe(["a red circle", "two blue squares"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
               callback=lambda i, n: steps.append((i, n)))
    assert isinstance(out, TextToImageOutput) and out.nfe == 3 and steps == [(1, 3), (2, 3), (3, 3)]
    assert len(out.images) == 2 and all(isinstance(im, PIL.Image.Image) and im.size == (32, 32) for im in out.images)
    assert pipe.text_encoder.calls == 1


def test_same_seed_same_image_and_prompt_matters():
    pipe = _pipe("euler")

    def run(prompt, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return pipe(prompt, num_inference_steps=2, output_type="np", generator=generator).images

    a = run("a red circle")
    assert a.shape == (1, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, run("a red circle"))
    assert not np.array_equal(a, run("a green triangle"))


def test_inpainting_keeps_the_known_pixels_exactly():
    pipe = _pipe()
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:20] = True
    out = pipe("a red circle", num_inference_steps=3, image=PIL.Image.fromarray(image), mask=mask, output_type="np",
               generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_non_finite_model_output_raises_floating_point_error():
    pipe = _pipe()
    with torch.no_grad():
        pipe.transformer.final_layer.linear.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        pipe("a red circle", num_inference_steps=2)


@pytest.mark.parametrize("inpaint", [False, True])
def test_one_generator_per_prompt_makes_each_image_independent_of_the_batch(inpaint):
    pipe = _pipe()
    extra = {}
    if inpaint:
        mask = np.zeros((32, 32), bool)
        mask[:, :16] = True
        extra = dict(mask=mask, image=np.full((32, 32, 3), 40, np.uint8))
    prompts = ["a red circle", "two blue squares", "a green triangle"]
    batch = pipe(prompts, num_inference_steps=3, output_type="np",
                 generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)], **extra).images
    alone = pipe(prompts[1], num_inference_steps=3, output_type="np",
                 generator=[torch.Generator().manual_seed(6)], **extra).images
    assert np.array_equal(batch[1], alone[0])
    assert not np.array_equal(batch[0], batch[2])


def test_guidance_interval_all_steps_or_none_matches_full_guidance_or_the_prompt_alone():
    pipe = _pipe()

    def run(**kwargs):
        return pipe(["a red circle", "two blue squares"], num_inference_steps=4, output_type="np",
                    generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kwargs).images

    full = run(guidance_scale=4.0)
    assert np.array_equal(run(guidance_scale=4.0, guidance_interval=(0.0, 1.0)), full)
    calls = pipe.text_encoder.calls
    assert np.array_equal(run(guidance_scale=4.0, guidance_interval=(0.0, 1e-6)), run(guidance_scale=1.0))
    assert pipe.text_encoder.calls == calls + 2  # the prompts are encoded once per call, interval or not
    part = run(guidance_scale=4.0, guidance_interval=(0.0, 0.6))  # the first steps (t > 0.6) unguided
    assert not np.array_equal(part, full) and not np.array_equal(part, run(guidance_scale=1.0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt=["a circle", "  "]), "prompt is empty"),
    (dict(prompt=[]), "non-empty list"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=2.5), "num_inference_steps"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(output_type="latent"), "output_type"),
    (dict(mask=np.ones((32, 32), bool)), "both image and mask"),
    (dict(image=np.zeros((32, 32, 3), np.uint8), mask=np.ones((16, 32), bool)), "must match"),
    (dict(image=np.zeros((32, 32, 3), np.uint8), mask=np.zeros((32, 32), bool)), "covers nothing"),
    (dict(height=30), "multiples of patch_size"),
    (dict(generator=[torch.Generator(), torch.Generator()]), "generators for 1 prompts"),
    (dict(guidance_interval=(0.8, 0.2)), "guidance_interval"),
    (dict(guidance_interval=0.5), "guidance_interval"),
])
def test_bad_inputs_raise_value_error(kwargs, match):
    pipe = _pipe()
    kwargs = {"prompt": "a red circle", "num_inference_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)
    assert pipe.text_encoder.calls == 0  # rejected before any work


def test_save_and_load_round_trip_with_the_text_encoder_passed_back(tmp_path):
    pipe = _pipe()
    pipe.save_pretrained(tmp_path)  # the test double is not saveable: recorded as absent
    loaded = TextToImagePipeline.from_pretrained(tmp_path, text_encoder=HashTextEncoder())
    loaded.set_progress_bar_config(disable=True)

    def run(p):
        return p("a red circle", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images

    assert type(loaded.scheduler) is type(pipe.scheduler)
    assert np.array_equal(run(loaded), run(pipe))


def test_prompt_planner_rewrites_grammar_prompts_per_seed_and_survives_save_and_load(tmp_path):
    pipe = _pipe()
    pipe.register_to_config(prompt_planner="shapes_layout")

    def run(p, prompts, seeds, **kw):
        return p(prompts, num_inference_steps=2, output_type="np",
                 generator=[torch.Generator().manual_seed(s) for s in seeds], **kw)

    out = run(pipe, ["a photo of a square", "a red circle to the left of a blue square", "a cat"], [1, 2, 3])
    square, pair, cat = out.prompts
    assert square.count("square") == 1 and square != "a photo of a square" and "," not in square
    assert pair.index("red circle") < pair.index("blue square") and cat == "a cat"  # outside the grammar
    # a prompt's layout depends on its seed alone, not on its place in the batch
    assert run(pipe, ["a cat", "a photo of a square"], [3, 1]).prompts[1] == square
    assert run(pipe, ["a photo of a square"], [5]).prompts[0] != square or \
        run(pipe, ["a photo of a square"], [6]).prompts[0] != square
    # the planned caption is what the model sees: the same image as passing the caption without planning
    assert np.array_equal(run(pipe, [square], [1], plan_prompts=False).images[0], out.images[0])
    off = run(pipe, ["a photo of a square"], [1], plan_prompts=False)
    assert off.prompts == ["a photo of a square"] and not np.array_equal(off.images[0], out.images[0])

    # inpainting keeps the prompt unless asked: a plan for the whole canvas would ignore the known pixels
    known, hole = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), bool)
    hole[:, :16] = True
    assert run(pipe, ["a photo of a square"], [1], image=known, mask=hole).prompts == ["a photo of a square"]
    assert run(pipe, ["a photo of a square"], [1], image=known, mask=hole, plan_prompts=True).prompts == [square]

    pipe.save_pretrained(tmp_path)
    loaded = TextToImagePipeline.from_pretrained(tmp_path, text_encoder=HashTextEncoder())
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.prompt_planner == "shapes_layout"
    assert run(loaded, ["a photo of a square"], [1]).prompts == [square]


def test_prompt_planner_bad_settings_raise():
    with pytest.raises(ValueError, match="prompt_planner"):
        TextToImagePipeline(transformer=SanaDiT(**SanaDiT.tiny_config()), scheduler=make_flow_scheduler("euler"),
                            prompt_planner="llm")
    pipe = _pipe()
    assert pipe("a red circle", num_inference_steps=1).prompts == ["a red circle"]  # no planner: unchanged
    with pytest.raises(ValueError, match="no prompt_planner"):
        pipe("a red circle", num_inference_steps=1, plan_prompts=True)
    with pytest.raises(ValueError, match="plan_prompts"):
        pipe("a red circle", num_inference_steps=1, plan_prompts="yes")
