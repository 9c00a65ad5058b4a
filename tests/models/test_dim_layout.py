"""Layout-conditioned Diffusion Mamba: the world's layouts and planner, the model's layout path, the training
objective's layout dropout and the text-to-video pipeline's layout planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmodels.data.moving_shapes import (
    DIRECTIONS,
    MAX_LAYOUT_OBJECTS,
    MovingShapesDataset,
    VideoCaptionError,
    free_steps,
    layout_boxes,
    make_clip,
    plan_layout,
)
from genmodels.data.shapes import COLOURS, object_extent
from genmodels.diffusion.flow import FlowObjective, make_flow_scheduler
from genmodels.diffusion.objectives import TextConditioned
from genmodels.dim import DiffusionMamba, box_masks
from genmodels.pipelines.text_to_video import TextToVideoPipeline
from tests.pipelines.test_text_to_image import HashTextEncoder

# ------------------------------------------------------------------------------------------------------------
# World: layouts of rendered clips, and the planner


@pytest.mark.parametrize("index", range(6))
def test_clip_boxes_hold_each_object_and_fit_its_extent(index):
    clip = make_clip(index)
    boxes = torch.from_numpy(clip.boxes)  # [K, F, 4]
    assert boxes.shape == (len(clip.spec["objects"]), 8, 4)
    masks = box_masks(boxes, 32, 32).bool()  # [K, F, H, W]
    for k, obj in enumerate(clip.spec["objects"]):
        extent = object_extent(obj["size"], 32)
        assert torch.all(boxes[k, :, 2] - boxes[k, :, 0] == extent)
        assert torch.all(boxes[k, :, 3] - boxes[k, :, 1] == extent)
        colour = np.array(COLOURS[obj["colour"]])
        pixels = torch.from_numpy((clip.frames == colour).all(-1))  # [F, H, W]: this object's colour
        assert pixels.flatten(1).any(1).all()
        same = [j for j, o in enumerate(clip.spec["objects"]) if o["colour"] == obj["colour"]]
        assert not (pixels & ~masks[same].any(0)).any()  # every pixel of the colour lies in its objects' boxes


def test_dataset_serves_layouts_only_when_asked():
    plain, laid = MovingShapesDataset(length=4), MovingShapesDataset(length=4, layout=True)
    assert "layout_boxes" not in plain[1]
    item = laid[1]
    assert torch.equal(item["pixel_values"], plain[1]["pixel_values"])
    assert item["layout_boxes"].shape == (MAX_LAYOUT_OBJECTS, 8, 4)
    k = len(item["layout_phrases"].split("|"))
    assert item["layout_valid"].tolist() == [True] * k + [False] * (MAX_LAYOUT_OBJECTS - k)
    assert np.array_equal(item["layout_boxes"][:k].numpy(), make_clip(1).boxes)
    assert not item["layout_boxes"][k:].any()
    single = laid[0]  # categories alternate single / two
    assert single["layout_phrases"].count("|") == 0 and single["layout_valid"].tolist() == [True, False]


def test_planner_reads_the_caption_and_moves_each_object_its_way():
    caption = "a red circle moves left and a blue square goes up"
    lay = plan_layout(caption, np.random.default_rng(0))
    assert lay.phrases == ("a red circle", "a blue square")
    assert [o["motion"] for o in lay.spec["objects"]] == ["left", "up"]
    for k, motion in enumerate(["left", "up"]):
        centre = (lay.boxes[k, :, :2] + lay.boxes[k, :, 2:]) / 2  # [F, 2]
        step = np.sign(np.diff(centre[: free_steps(8) + 1], axis=0))
        assert (step == np.array(DIRECTIONS[motion])).all()
        assert lay.boxes[k].min() >= 0 and lay.boxes[k].max() <= 32
    a, b = lay.boxes  # the two boxes never overlap
    apart = (a[:, 2] <= b[:, 0]) | (b[:, 2] <= a[:, 0]) | (a[:, 3] <= b[:, 1]) | (b[:, 3] <= a[:, 1])
    assert apart.all()
    again = plan_layout(caption, np.random.default_rng(0))
    assert np.array_equal(again.boxes, lay.boxes)
    other = [plan_layout(caption, np.random.default_rng(s)).boxes for s in range(1, 6)]
    assert any(not np.array_equal(o, lay.boxes) for o in other)


def test_planner_refuses_what_it_cannot_lay_out():
    with pytest.raises(VideoCaptionError, match="grammar"):
        plan_layout("a dog runs", np.random.default_rng(0))
    with pytest.raises(ValueError, match="frames"):
        plan_layout("a red circle moves left", np.random.default_rng(0), frames=40)


def test_layout_boxes_of_a_still_object_stay_put():
    clips = [make_clip(i, categories=["single"]) for i in range(40)]
    still = [c for c in clips if c.spec["objects"][0]["motion"] == "still"]
    assert still
    for clip in still:
        assert (clip.boxes == clip.boxes[:, :1]).all()
    assert layout_boxes([], 32, 8).shape == (0, 8, 4)


# ------------------------------------------------------------------------------------------------------------
# Model


def _model(**overrides) -> DiffusionMamba:
    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.tiny_config(), "sample_size": 32, "num_frames": 8,
                              "layout_conditioning": True, **overrides})
    with torch.no_grad():  # a trained-looking model whose layout path is still at its (zero) start
        for name, p in model.named_parameters():
            if not name.startswith("layout_embedder"):
                p.add_(torch.randn_like(p) * 0.05)
    return model


def _layout(batch: int = 2):
    lays = [plan_layout(c, np.random.default_rng(i)) for i, c in
            enumerate(["a red circle moves left and a blue square moves up", "a green triangle stays still"])]
    boxes = torch.zeros(batch, 2, 8, 4)
    mask = torch.zeros(batch, 2, dtype=torch.bool)
    for i in range(batch):
        lay = lays[i % 2]
        boxes[i, : len(lay.phrases)] = torch.from_numpy(lay.boxes)
        mask[i, : len(lay.phrases)] = True
    return boxes, torch.randn(batch, 2, 32), mask


def test_box_masks_mark_exactly_the_box_pixels():
    m = box_masks(torch.tensor([[2.0, 3.0, 5.0, 4.0]]), 6, 8)[0]
    expected = torch.zeros(6, 8)
    expected[3:4, 2:5] = 1
    assert torch.equal(m, expected)


def test_a_new_layout_path_changes_nothing_until_it_trains():
    model = _model()
    x, t = torch.randn(2, 3, 8, 32, 32), torch.tensor([0.3, 0.8])
    boxes, phrases, mask = _layout()
    plain = model(x, t)
    assert torch.equal(model(x, t, layout_boxes=boxes, layout_phrases=phrases, layout_mask=mask), plain)


def test_layout_steers_the_prediction_and_dropping_it_removes_it():
    model = _model()
    with torch.no_grad():
        for p in model.layout_embedder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, t = torch.randn(2, 3, 8, 32, 32), torch.tensor([0.3, 0.8])
    boxes, phrases, mask = _layout()
    plain = model(x, t)
    laid = model(x, t, layout_boxes=boxes, layout_phrases=phrases, layout_mask=mask)
    assert (laid - plain).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3
    dropped = model(x, t, layout_boxes=boxes, layout_phrases=phrases, layout_mask=mask,
                    drop_layout=torch.tensor([True, False]))
    assert torch.allclose(dropped[0], plain[0], atol=1e-6) and torch.allclose(dropped[1], laid[1], atol=1e-6)
    absent = model(x, t, layout_boxes=boxes, layout_phrases=phrases, layout_mask=torch.zeros_like(mask))
    assert torch.allclose(absent, plain, atol=1e-6)
    moved = boxes.clone()
    moved[..., 0::2] += 8  # the same objects elsewhere
    other = model(x, t, layout_boxes=moved, layout_phrases=phrases, layout_mask=mask)
    assert (other - laid).abs().max() > 1e-3


def test_layout_path_gets_gradients_from_the_start():
    model = _model()
    x, t = torch.randn(2, 3, 8, 32, 32), torch.tensor([0.3, 0.8])
    boxes, phrases, mask = _layout()
    model(x, t, layout_boxes=boxes, layout_phrases=phrases, layout_mask=mask).pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.layout_embedder.named_parameters()}
    assert grads["position.weight"].abs().sum() > 0 and grads["phrase.2.weight"].abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(layout_boxes=torch.zeros(2, 2, 7, 4), layout_phrases=torch.zeros(2, 2, 32)), "layout_boxes must be"),
    (dict(layout_boxes=torch.zeros(2, 2, 8, 4), layout_phrases=torch.zeros(2, 2, 16)), "layout_phrases must be"),
    (dict(layout_boxes=torch.zeros(2, 2, 8, 4)), "both layout_boxes and layout_phrases"),
    (dict(layout_boxes=torch.full((2, 2, 8, 4), float("nan")), layout_phrases=torch.zeros(2, 2, 32)), "finite"),
    (dict(layout_boxes=torch.zeros(2, 2, 8, 4), layout_phrases=torch.zeros(2, 2, 32),
          layout_mask=torch.ones(2, 3, dtype=torch.bool)), "layout_mask must be"),
])
def test_bad_layouts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model()(torch.randn(2, 3, 8, 32, 32), 0.5, **kwargs)


def test_a_model_without_the_layout_path_refuses_a_layout():
    model = _model(layout_conditioning=False)
    with pytest.raises(ValueError, match="layout_conditioning=False"):
        model(torch.randn(1, 3, 8, 32, 32), 0.5, layout_boxes=torch.zeros(1, 1, 8, 4),
              layout_phrases=torch.zeros(1, 1, 32))


# ------------------------------------------------------------------------------------------------------------
# Training objective


class _Spy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, **kwargs):
        self.calls.append(kwargs)
        return torch.zeros_like(x)


def _batch(n: int = 8):
    items = [MovingShapesDataset(length=n, layout=True)[i] for i in range(n)]
    batch = torch.utils.data.default_collate(items)
    batch["noise_seed"] = torch.arange(n)
    return batch


def _clip_text():
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    return CLIPTextEncoder(**CLIPTextEncoder.tiny_config()).eval()


def test_objective_drops_the_layout_with_the_caption_and_by_its_own_probability():
    encoder = _clip_text()
    for prob, expect_all in ((0.0, False), (1.0, True)):
        spy = _Spy()
        objective = TextConditioned(FlowObjective(shift=3, text_drop_prob=0.5, layout_drop_prob=prob), encoder)
        objective(spy, _batch())
        kw = spy.calls[-1]
        assert kw["layout_phrases"].shape == (8, 2, encoder.embed_dim) and kw["layout_boxes"].shape == (8, 2, 8, 4)
        if expect_all:
            assert kw["drop_layout"].all()
        else:
            assert torch.equal(kw["drop_layout"], kw["drop_text"])
    assert kw["drop_text"].any() and not kw["drop_text"].all()  # seeds 0..7 draw both outcomes


def test_objective_encodes_each_objects_phrase_in_order_and_zeros_absent_ones():
    encoder = _clip_text()
    batch = _batch(4)
    phrases = TextConditioned(FlowObjective(), encoder).encode_phrases(batch)
    for i, line in enumerate(batch["layout_phrases"]):
        names = line.split("|")
        assert torch.allclose(phrases[i, : len(names)], encoder.encode(names)[2], atol=1e-6)
        assert not phrases[i, len(names):].any()


def test_layout_dropout_draws_do_not_change_the_other_noise():
    spy_a, spy_b = _Spy(), _Spy()
    batch = _batch(4)
    plain = {k: v for k, v in batch.items() if not k.startswith("layout")}
    encoder = _clip_text()
    TextConditioned(FlowObjective(shift=3, given_frames_prob=0.5), encoder)(spy_a, batch)
    TextConditioned(FlowObjective(shift=3, given_frames_prob=0.5), encoder)(spy_b, plain)
    assert torch.equal(spy_a.calls[0]["frame_mask"], spy_b.calls[0]["frame_mask"])
    assert torch.equal(spy_a.calls[0]["drop_text"], spy_b.calls[0]["drop_text"])


# ------------------------------------------------------------------------------------------------------------
# Pipeline


def _pipe(planner: str | None = "moving_shapes") -> TextToVideoPipeline:
    model = _model()
    with torch.no_grad():
        for p in model.layout_embedder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    pipe = TextToVideoPipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++", shift=3),
                               text_encoder=HashTextEncoder(), layout_planner=planner)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


PROMPTS = ["a red circle moves left and a blue square moves up", "a green triangle stays still"]


def test_pipeline_plans_a_layout_per_prompt_and_seed_and_follows_it():
    pipe = _pipe()
    out = pipe(PROMPTS, num_inference_steps=2, generator=_gens(1, 2))
    assert [lay.phrases for lay in out.layouts] == [("a red circle", "a blue square"), ("a green triangle",)]
    for lay, prompt, seed in zip(out.layouts, PROMPTS, (1, 2)):  # the planner's layout for the prompt's seed
        assert np.array_equal(lay.boxes, plan_layout(prompt, np.random.default_rng(seed)).boxes)
    plain = pipe(PROMPTS, num_inference_steps=2, generator=_gens(1, 2), plan_layout=False)
    assert plain.layouts is None
    assert np.abs(out.frames.astype(int) - plain.frames.astype(int)).max() > 0
    alone = pipe(PROMPTS[1], num_inference_steps=2, generator=_gens(2))
    assert np.array_equal(alone.layouts[0].boxes, out.layouts[1].boxes)
    assert np.abs(alone.frames[0].astype(int) - out.frames[1].astype(int)).max() <= 1


def test_guidance_shows_the_layout_to_the_conditional_half_only():
    pipe = _pipe()
    seen = []
    forward = pipe.transformer.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("drop_layout"))
        return forward(*args, **kwargs)

    pipe.transformer.forward = spy
    pipe(PROMPTS[0], num_inference_steps=2, generator=_gens(0))
    assert seen and all(d is not None and d.tolist() == [True, False] for d in seen)


def test_prompts_the_planner_cannot_read_get_no_layout_unless_one_is_required():
    pipe = _pipe()
    out = pipe([PROMPTS[0], "a dog chasing a ball"], num_inference_steps=2, generator=_gens(0, 1))
    assert out.layouts[0] is not None and out.layouts[1] is None
    calls = pipe.text_encoder.calls
    with pytest.raises(ValueError, match="cannot lay out"):
        pipe("a dog chasing a ball", num_inference_steps=2, plan_layout=True)
    assert pipe.text_encoder.calls == calls  # refused before any work
    with pytest.raises(ValueError, match="not 20 frames"):
        pipe(PROMPTS[0], num_frames=20, num_inference_steps=2, plan_layout=True)


def test_continuations_and_pipelines_without_a_planner_get_no_layout():
    pipe = _pipe()
    given = np.zeros((2, 32, 32, 3), np.uint8)
    assert pipe(PROMPTS[0], first_frames=given, num_inference_steps=2).layouts is None
    with pytest.raises(ValueError, match="continuation"):
        pipe(PROMPTS[0], first_frames=given, num_inference_steps=2, plan_layout=True)
    assert _pipe(planner=None)(PROMPTS[0], num_inference_steps=2).layouts is None


def test_a_planner_needs_a_layout_model_and_a_known_name():
    encoder = HashTextEncoder()
    plain = DiffusionMamba(**DiffusionMamba.tiny_config())
    with pytest.raises(ValueError, match="layout_conditioning"):
        TextToVideoPipeline(transformer=plain, scheduler=make_flow_scheduler("dpmsolver++"), text_encoder=encoder,
                            layout_planner="moving_shapes")
    with pytest.raises(ValueError, match="layout_planner must be"):
        TextToVideoPipeline(transformer=_model(), scheduler=make_flow_scheduler("dpmsolver++"), text_encoder=encoder,
                            layout_planner="llm")


def test_the_planner_survives_save_and_load(tmp_path):
    from genmodels.loading import load_pipeline
    from genmodels.text import CLIPTextEncoder

    encoder = CLIPTextEncoder(**CLIPTextEncoder.tiny_config())
    model = _model(text_dim=encoder.width, pooled_text_dim=encoder.embed_dim)
    pipe = TextToVideoPipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++", shift=3),
                               text_encoder=encoder, layout_planner="moving_shapes")
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(TextToVideoPipeline, tmp_path)
    assert loaded.config.layout_planner == "moving_shapes" and loaded.transformer.config.layout_conditioning
    loaded.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    a = pipe(PROMPTS[0], num_inference_steps=2, generator=_gens(3))
    b = loaded(PROMPTS[0], num_inference_steps=2, generator=_gens(3))
    assert np.array_equal(a.layouts[0].boxes, b.layouts[0].boxes)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
