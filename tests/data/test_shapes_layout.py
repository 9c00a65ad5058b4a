"""Layout captions and the prompt planner of the shapes world (genmodels.data.shapes_layout)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest

from genmodels.data.shapes import ShapeObject, ShapesDataset, ShapesError, parse_caption, render_scene
from genmodels.data.shapes_layout import layout_caption, place_words, plan_prompt, plan_scene
from genmodels.eval.shapes_oracle import evaluate, load_eval_set, validation_items

CLIP_CONTEXT = 32  # the shapes CLIP's context length (training/recipes/clip_shapes.json)


def test_place_words_name_the_grid_cell_of_the_centre():
    assert [place_words(x, 5, 64) for x in (5, 32, 60)] == ["top left", "top", "top right"]
    assert [place_words(x, 32, 64) for x in (5, 32, 60)] == ["left", "middle", "right"]
    assert [place_words(x, 63, 64) for x in (0, 32, 63)] == ["bottom left", "bottom", "bottom right"]
    assert place_words(21, 21, 64) == "top left" and place_words(22, 22, 64) == "middle"  # cells of 64 / 3


def test_layout_caption_lists_every_object_left_to_right():
    scene = [ShapeObject("square", "blue", "large", 50, 50), ShapeObject("circle", "red", "small", 10, 10),
             ShapeObject("triangle", "green", "small", 30, 33)]
    assert layout_caption(scene) == "small red circle top left, small green triangle middle, large blue square " \
                                    "bottom right"
    with pytest.raises(ShapesError):
        layout_caption([])


@pytest.mark.parametrize("split", ["eval", "val"])
def test_planned_scenes_satisfy_their_prompts_for_the_oracle(split):
    """The planner keeps every stated claim: a rendered plan of each prompt passes the oracle (all 240
    evaluation prompts, 120 validation captions)."""
    items = load_eval_set() if split == "eval" else validation_items(20)
    rng = np.random.default_rng(0)
    scenes = [plan_scene(parse_caption(item["prompt"]), rng) for item in items]
    images = np.stack([render_scene(scene, 64) for scene in scenes])
    scores = evaluate(images, [item["spec"] for item in items])
    assert scores["accuracy"] == 1.0, [i["prompt"] for i, ok in zip(items, scores["correct"]) if not ok][:5]
    # and the unstated attributes vary: colours of "a photo of a square" are drawn, not fixed
    colours = {plan_scene(parse_caption("a photo of a square"), rng)[0].colour for _ in range(40)}
    assert len(colours) >= 4


def test_plan_prompt_is_seeded_and_leaves_prompts_outside_the_grammar_alone():
    caption, planned = plan_prompt("a red circle to the left of a blue square", np.random.default_rng(3))
    assert planned and caption == plan_prompt("a red circle to the left of a blue square",
                                              np.random.default_rng(3))[0]
    assert "red circle" in caption and "blue square" in caption
    assert caption.index("red circle") < caption.index("blue square")  # left to right
    assert plan_prompt("a cat on a mat", np.random.default_rng(0)) == ("a cat on a mat", False)
    counted, _ = plan_prompt("there are 4 green triangles", np.random.default_rng(0))
    assert counted.count("green triangle") == 4


def test_layout_captions_fit_the_clip_context():
    tokenizer = open_clip.SimpleTokenizer(context_length=64)
    data = ShapesDataset(length=600, layout_share=1.0)
    captions = [data[i]["caption"] for i in range(len(data))]
    captions += [plan_prompt("there are four large circles", np.random.default_rng(s))[0] for s in range(20)]
    longest = max(int((tokenizer([c])[0] > 0).sum()) for c in captions)
    assert longest <= CLIP_CONTEXT


def test_dataset_layout_share_changes_captions_only_and_is_deterministic():
    plain, half, full = (ShapesDataset(length=60, layout_share=s) for s in (0.0, 0.5, 1.0))
    layout = [full[i]["caption"] for i in range(60)]
    assert all(parse_caption_fails(c) for c in layout)  # layout captions are not in the short grammar
    mixed = [half[i]["caption"] for i in range(60)]
    assert 15 <= sum(m == f for m, f in zip(mixed, layout)) <= 45
    assert mixed == [ShapesDataset(length=60, layout_share=0.5)[i]["caption"] for i in range(60)]
    for i in range(0, 60, 7):
        assert np.array_equal(plain[i]["pixel_values"].numpy(), full[i]["pixel_values"].numpy())
        assert half[i]["caption"] in (plain[i]["caption"], full[i]["caption"])
    assert plain.prompt_planner is None and half.prompt_planner == "shapes_layout"
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ShapesError, match="layout_share"):
            ShapesDataset(layout_share=bad)


def parse_caption_fails(caption: str) -> bool:
    try:
        parse_caption(caption)
    except ShapesError:
        return True
    return False
