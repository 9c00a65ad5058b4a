"""TextToVideoPipeline end to end on a tiny DiffusionMamba with the hashing text encoder (test double)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from genmodels.diffusion.flow import make_flow_scheduler
from genmodels.dim import DiffusionMamba
from genmodels.pipelines.text_to_video import TextToVideoOutput, TextToVideoPipeline
from tests.pipelines.test_text_to_image import HashTextEncoder


def _pipe(**overrides) -> TextToVideoPipeline:
    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.tiny_config(), **overrides})
    with torch.no_grad():  # a non-trivial velocity field
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = TextToVideoPipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=HashTextEncoder())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_generates_one_clip_per_prompt():
    pipe = _pipe()
    steps = []
    out = pipe(["a red circle moves left", "a blue square stays still"], num_inference_steps=3,
               generator=_gens(0, 1), callback=lambda i, n: steps.append(i))
    assert isinstance(out, TextToVideoOutput) and out.nfe == 3 and steps == [1, 2, 3] and out.given == 0
    assert out.frames.shape == (2, 4, 16, 16, 3) and out.frames.dtype == np.uint8
    assert pipe.text_encoder.calls == 1
    assert out.frames.std() > 0


def test_num_frames_and_pil_output():
    out = _pipe()("a red circle moves left", num_frames=6, num_inference_steps=2, output_type="pil",
                  generator=torch.Generator().manual_seed(0))
    assert len(out.frames) == 1 and len(out.frames[0]) == 6
    assert all(isinstance(f, PIL.Image.Image) and f.size == (16, 16) for f in out.frames[0])


def test_clips_do_not_depend_on_the_batch():
    pipe = _pipe()
    both = pipe(["a red circle moves left", "a blue square moves up"], num_inference_steps=3,
                generator=_gens(5, 6)).frames
    alone = pipe("a blue square moves up", num_inference_steps=3, generator=_gens(6)).frames
    assert np.abs(both[1].astype(int) - alone[0].astype(int)).max() <= 1


def test_continuation_keeps_the_given_frames_exactly_and_changes_the_rest():
    pipe = _pipe()
    given = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    out = pipe("a red circle moves left", num_inference_steps=3, first_frames=given, generator=_gens(0))
    assert out.given == 2 and np.array_equal(out.frames[0, :2], given)
    plain = pipe("a red circle moves left", num_inference_steps=3, generator=_gens(0)).frames
    assert not np.array_equal(out.frames[0, 2:], plain[0, 2:])  # the generated frames see the given ones


def test_given_frames_as_pil_list():
    pipe = _pipe()
    frames = [PIL.Image.new("RGB", (16, 16), (255, 0, 0))] * 3
    out = pipe("a red circle moves left", num_inference_steps=2, first_frames=frames, generator=_gens(0))
    assert (out.frames[0, :3] == np.array([255, 0, 0], np.uint8)).all()


def test_guidance_interval_over_all_steps_or_none():
    pipe = _pipe()

    def run(**kwargs):
        return pipe("a red circle moves left", num_inference_steps=3, generator=_gens(3), **kwargs).frames.astype(int)

    full = run(guidance_scale=4.0)
    assert np.array_equal(run(guidance_scale=4.0, guidance_interval=(0.0, 1.0)), full)
    assert np.abs(run(guidance_scale=4.0, guidance_interval=(0.0, 1e-6)) - run(guidance_scale=1.0)).max() <= 1
    assert np.abs(run(guidance_scale=4.0, guidance_interval=(0.0, 0.6)) - full).max() > 1


def test_negative_prompt_takes_the_null_texts_place_in_guidance():
    pipe = _pipe()
    prompts = ["a red circle moves left", "a blue square moves up"]

    def run(**kwargs):
        return pipe(prompts, num_inference_steps=3, generator=_gens(3, 4), **kwargs).frames.astype(int)

    plain, unguided = run(guidance_scale=4.0), run(guidance_scale=1.0)
    # v_neg + w·(v_text − v_neg) with the prompt itself as the negative is v_text, whatever w
    assert np.abs(run(guidance_scale=4.0, negative_prompt=prompts) - unguided).max() <= 1
    still = run(guidance_scale=4.0, negative_prompt="a red circle stays still")
    assert np.abs(still - plain).max() > 1 and np.abs(still - unguided).max() > 1
    # None keeps the null text for that prompt only; one encoder call covers negatives and prompts
    calls = pipe.text_encoder.calls
    mixed = run(guidance_scale=4.0, negative_prompt=[None, "a blue square stays still"])
    assert pipe.text_encoder.calls == calls + 1
    assert np.abs(mixed[0] - plain[0]).max() <= 1 and np.abs(mixed[1] - plain[1]).max() > 1
    assert np.array_equal(run(guidance_scale=4.0, negative_prompt=[None, None]), plain)


@pytest.mark.parametrize("negative, match", [
    ("", "non-blank strings"),
    (["a red circle stays still", "x"], "list of 1"),
    ([3], "non-blank strings"),
    (7, "must be a string or a list"),
])
def test_bad_negative_prompts_raise_before_any_work(negative, match):
    pipe = _pipe()
    with pytest.raises(ValueError, match=match):
        pipe("a red circle moves left", num_inference_steps=2, negative_prompt=negative)
    assert pipe.text_encoder.calls == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt=""), "prompt is empty"),
    (dict(num_frames=0), "num_frames must be a positive integer"),
    (dict(num_frames=1000), "num_frames must be at most"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(first_frames=np.zeros((4, 16, 16, 3), np.uint8)), "nothing left to generate"),
    (dict(first_frames=np.zeros((2, 16, 16), np.uint8)), r"\[K, H, W, 3\] uint8"),
    (dict(first_frames=np.zeros((2, 16, 16, 3), np.uint8), height=32), "differs from the given frames"),
    (dict(first_frames=[]), "non-empty list"),
    (dict(height=18), "multiples of patch_size"),
    (dict(output_type="latent"), "output_type"),
    (dict(guidance_interval=(0.3, 0.3)), "guidance_interval"),
])
def test_bad_inputs_raise_before_any_work(kwargs, match):
    pipe = _pipe()
    args = dict(prompt="a red circle moves left", num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pipe(**args)
    assert pipe.text_encoder.calls == 0


def test_continuation_needs_a_frame_conditioned_model():
    pipe = _pipe(frame_conditioning=False)
    with pytest.raises(ValueError, match="without frame conditioning"):
        pipe("a red circle moves left", first_frames=np.zeros((1, 16, 16, 3), np.uint8))


def test_save_and_load_the_pipeline(tmp_path):
    from genmodels.loading import load_pipeline
    from genmodels.text import CLIPTextEncoder

    encoder = CLIPTextEncoder(**CLIPTextEncoder.tiny_config())
    config = {**DiffusionMamba.tiny_config(), "text_dim": encoder.width, "pooled_text_dim": encoder.embed_dim}
    pipe = TextToVideoPipeline(transformer=DiffusionMamba(**config), scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=encoder)
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(TextToVideoPipeline, tmp_path)
    loaded.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    a = pipe("a red circle moves left", num_inference_steps=2, generator=_gens(3)).frames
    b = loaded("a red circle moves left", num_inference_steps=2, generator=_gens(3)).frames
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_one_given_clip_per_prompt_matches_continuing_each_alone():
    pipe = _pipe()
    given = np.random.default_rng(1).integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)
    prompts = ["a red circle moves left", "a blue square moves up"]
    both = pipe(prompts, num_inference_steps=3, first_frames=given, generator=_gens(0, 1)).frames
    assert np.array_equal(both[:, :2], given)
    alone = pipe(prompts[1], num_inference_steps=3, first_frames=given[1], generator=_gens(1)).frames
    assert np.abs(both[1].astype(int) - alone[0].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="3 clips for 2 prompts"):
        pipe(prompts, first_frames=np.zeros((3, 2, 16, 16, 3), np.uint8))


def test_first_frame_pass_animates_the_first_pass_frame():
    pipe = _pipe()
    steps = []
    prompts = ["a red circle moves left", "a blue square moves up"]
    out = pipe(prompts, num_inference_steps=3, generator=_gens(0, 1), first_frame_pass=True,
               callback=lambda i, n: steps.append((i, n)))
    assert out.nfe == 6 and out.given == 0 and steps == [(i, 6) for i in range(1, 7)]
    first = pipe(prompts, num_inference_steps=3, generator=_gens(0, 1)).frames  # the first pass alone
    assert np.array_equal(out.frames[:, 0], first[:, 0])
    again = pipe(prompts, num_inference_steps=3, generator=_gens(0, 1), first_frame_pass=True).frames
    assert np.array_equal(out.frames, again)  # deterministic given the generators
    assert not np.array_equal(out.frames[:, 1:], first[:, 1:])  # the rest was drawn again
    pil = pipe(prompts[0], num_inference_steps=2, generator=_gens(0), first_frame_pass=True, output_type="pil")
    assert len(pil.frames[0]) == 4 and pil.frames[0][0].size == (16, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(first_frames=np.zeros((1, 16, 16, 3), np.uint8)), "give no first_frames"),
    (dict(num_frames=1), "at least 2 frames"),
])
def test_first_frame_pass_refuses_what_it_cannot_do(kwargs, match):
    pipe = _pipe()
    with pytest.raises(ValueError, match=match):
        pipe("a red circle moves left", num_inference_steps=2, first_frame_pass=True, **kwargs)
    assert pipe.text_encoder.calls == 0
    with pytest.raises(ValueError, match="without frame conditioning"):
        _pipe(frame_conditioning=False)("a red circle moves left", first_frame_pass=True)
