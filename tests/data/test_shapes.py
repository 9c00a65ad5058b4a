"""Shapes world: rendering, scenes, captions and their grammar, the dataset and the imagefolder export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from genmodels.data import build_dataset
from genmodels.data.shapes import (
    CATEGORIES,
    COLOURS,
    POSITION_MIN_AXIS_OFFSET,
    SHAPES,
    CaptionError,
    ShapeObject,
    ShapesDataset,
    ShapesError,
    boxes_apart,
    check_spec,
    export_imagefolder,
    make_sample,
    object_extent,
    object_gap,
    parse_caption,
    relations_between,
    render_dataset,
    render_scene,
    sample_scene,
    shape_mask,
)

N = 300  # 50 per category


@pytest.fixture(scope="module")
def samples():
    return list(render_dataset(N, seed=11))


def mentioned_shapes(spec: dict) -> set[str]:
    return {obj["shape"] for obj in spec["objects"]}


# ---------------------------------------------------------------------------------------------------------
# Rendering and scenes


def test_same_seed_gives_identical_samples_and_other_seeds_or_splits_differ():
    a, b = list(render_dataset(12, seed=3)), list(render_dataset(12, seed=3))
    assert all(np.array_equal(x.image, y.image) and x.caption == y.caption and x.spec == y.spec for x, y in zip(a, b))
    other_seed = list(render_dataset(12, seed=4))
    val = list(render_dataset(12, seed=3, split="val"))
    assert sum(np.array_equal(x.image, y.image) for x, y in zip(a, other_seed)) == 0
    assert sum(np.array_equal(x.image, y.image) for x, y in zip(a, val)) == 0


def test_images_hold_only_exact_palette_colours_and_black(samples):
    def packed(rgb):  # one integer per colour
        rgb = np.asarray(rgb, dtype=np.int64).reshape(-1, 3)
        return rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]

    allowed = set(packed([(0, 0, 0), *COLOURS.values()]).tolist())
    pixels = np.concatenate([packed(s.image) for s in samples])
    assert samples[0].image.dtype == np.uint8 and samples[0].image.shape == (64, 64, 3)
    assert set(np.unique(pixels).tolist()) <= allowed


def test_objects_fit_inside_the_border_and_keep_a_gap_without_overlapping(samples):
    for s in samples:
        boxes = [obj.bbox(64) for obj in s.scene]
        assert 1 <= len(s.scene) <= 4
        assert all(x0 >= 1 and y0 >= 1 and x1 <= 63 and y1 <= 63 for x0, y0, x1, y1 in boxes)
        assert all(boxes_apart(a, b, gap=2) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        painted = (s.image.sum(-1) > 0).sum()
        assert painted == sum(shape_mask(o.shape, object_extent(o.size, 64)).sum() for o in s.scene)


def test_sizes_are_a_sixth_and_a_third_of_the_side_in_odd_pixels():
    assert [object_extent(size, 64) for size in ("small", "large")] == [11, 21]
    assert [object_extent(size, 128) for size in ("small", "large")] == [21, 43]
    assert object_gap(64) >= 2


def test_shape_masks_have_the_expected_geometry():
    square, circle, triangle = (shape_mask(s, 21) for s in ("square", "circle", "triangle"))
    assert square.all()
    assert circle.mean() == pytest.approx(np.pi / 4, abs=0.02) and circle[10].all() and not circle[0, 0]
    assert triangle.mean() == pytest.approx(0.5, abs=0.02)
    assert triangle[-1].all() and triangle[0].sum() == 1 and triangle[0, 10]  # apex up, base at the bottom


def test_render_scene_paints_each_object_with_its_colour():
    scene = [ShapeObject("square", "red", "small", 10, 10), ShapeObject("triangle", "blue", "large", 40, 40)]
    image = render_scene(scene)
    assert tuple(image[10, 10]) == COLOURS["red"] and tuple(image[45, 40]) == COLOURS["blue"]
    assert tuple(image[0, 0]) == (0, 0, 0)
    with pytest.raises(ShapesError, match="fit"):
        render_scene([ShapeObject("circle", "red", "large", 3, 30)])


def test_position_scenes_separate_the_pair_clearly_along_the_stated_axis():
    rng = np.random.default_rng(0)
    for _ in range(60):
        scene, _, spec = sample_scene("position", rng)
        a, b = scene[0], scene[1]
        along = {"left of": b.cx - a.cx, "right of": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}
        assert along[spec["relation"]] >= POSITION_MIN_AXIS_OFFSET * 64
        assert relations_between(a.bbox(64), b.bbox(64)) == {spec["relation"]}


def test_counting_and_single_scenes_hold_exactly_the_claimed_objects(samples):
    for s in samples:
        spec = s.spec
        if spec["category"] == "single_object":
            assert [o.shape for o in s.scene] == [spec["objects"][0]["shape"]]
        if spec["category"] == "counting":
            obj = spec["objects"][0]
            assert len(s.scene) == spec["count"] and {o.shape for o in s.scene} == {obj["shape"]}
            assert obj["colour"] is None or {o.colour for o in s.scene} == {obj["colour"]}


def test_distractors_have_shapes_the_caption_never_mentions(samples):
    with_distractor = 0
    for s in samples:
        if s.spec["category"] in ("single_object", "counting"):
            continue
        extra = s.scene[len(s.spec["objects"]) :]
        with_distractor += bool(extra)
        assert len(extra) <= 1 and not {o.shape for o in extra} & mentioned_shapes(s.spec)
    assert with_distractor > 50  # about half of the 200 scenes that may have one


def test_samples_cycle_through_the_categories(samples):
    assert [s.spec["category"] for s in samples[:6]] == list(CATEGORIES)
    assert make_sample(4, seed=2, categories=["counting"]).spec["category"] == "counting"


def test_other_image_sizes_render_within_bounds():
    for size in (32, 128):
        for s in render_dataset(12, seed=1, size=size):
            assert s.image.shape == (size, size, 3)
            assert all(min(o.bbox(size)[:2]) >= 1 and max(o.bbox(size)[2:]) <= size - 1 for o in s.scene)


def test_bad_arguments_raise_shapes_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ShapesError, match="category"):
        sample_scene("size", rng)
    with pytest.raises(ShapesError, match="size"):
        sample_scene("counting", rng, size=16)
    with pytest.raises(ShapesError, match="split"):
        ShapesDataset("test")
    with pytest.raises(ShapesError, match="categories"):
        ShapesDataset("train", categories=["nope"])
    assert issubclass(ShapesError, ValueError) and issubclass(CaptionError, ShapesError)


# ---------------------------------------------------------------------------------------------------------
# Captions


def test_every_generated_caption_parses_back_to_its_spec(samples):
    for s in samples:
        assert parse_caption(s.caption) == check_spec(s.spec), s.caption


def test_each_category_uses_several_templates(samples):
    def template_of(caption: str) -> str:  # the caption with its content words blanked
        words = "|".join([*SHAPES, *(s + "s" for s in SHAPES), *COLOURS, "small", "large", "two", "three", "four"])
        return re.sub(rf"\b({words}|\d)\b", "_", re.sub(r"\ban\b", "a", caption))

    for category in CATEGORIES:
        forms = {template_of(s.caption) for s in samples if s.spec["category"] == category}
        assert len(forms) >= 3, (category, forms)


@pytest.mark.parametrize(
    ("caption", "category", "objects", "count", "relation"),
    [
        ("a photo of a circle", "single_object", [("circle", None, None)], None, None),
        ("There is a small square.", "single_object", [("square", None, "small")], None, None),
        ("a circle and a triangle", "two_objects", [("circle", None, None), ("triangle", None, None)], None, None),
        ("three squares", "counting", [("square", None, None)], 3, None),
        ("there are 4 blue squares", "counting", [("square", "blue", None)], 4, None),
        ("a purple triangle", "colours", [("triangle", "purple", None)], None, None),
        ("an image of a triangle that is orange", "colours", [("triangle", "orange", None)], None, None),
        (
            "a red circle to the left of a blue square",
            "position",
            [("circle", "red", None), ("square", "blue", None)],
            None,
            "left of",
        ),
        ("a circle under a square", "position", [("circle", None, None), ("square", None, None)], None, "below"),
        (
            "a red square and a green circle",
            "colour_attribution",
            [("square", "red", None), ("circle", "green", None)],
            None,
            None,
        ),
    ],
)
def test_parse_caption_reads_each_category(caption, category, objects, count, relation):
    expected = [{"shape": s, "colour": c, "size": z} for s, c, z in objects]
    spec = parse_caption(caption)
    assert spec == {"category": category, "objects": expected, "count": count, "relation": relation}


@pytest.mark.parametrize(
    "caption",
    ["", "a dog", "five circles", "a red circle and a square", "a red circle that is blue", "a circle near a square"],
)
def test_captions_outside_the_grammar_raise(caption):
    with pytest.raises(CaptionError):
        parse_caption(caption)


def test_check_spec_rejects_malformed_specs():
    good = parse_caption("three squares")
    assert check_spec(good) is good
    for bad in (
        {**good, "count": 7},
        {**good, "category": "size"},
        {**good, "relation": "above"},
        {**good, "objects": []},
    ):
        with pytest.raises(ShapesError):
            check_spec(bad)


# ---------------------------------------------------------------------------------------------------------
# Dataset and export


def test_dataset_items_are_model_inputs_with_caption_and_spec():
    ds = ShapesDataset("train", length=12, seed=5)
    item = ds[3]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() == -1.0 and item["pixel_values"].max() <= 1.0
    sample = make_sample(3, seed=5)
    expected = torch.from_numpy(sample.image).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(item["pixel_values"], expected)
    assert item["caption"] == sample.caption and json.loads(item["spec"]) == parse_caption(item["caption"])
    assert torch.equal(ds[3]["pixel_values"], ShapesDataset("train", length=12, seed=5)[3]["pixel_values"])
    with pytest.raises(IndexError):
        ds[12]


def test_train_and_val_draw_from_different_streams():
    train, val = ShapesDataset("train", length=30), ShapesDataset("val", length=30)
    assert len(ShapesDataset("val")) == 1200
    assert sum(torch.equal(train[i]["pixel_values"], val[i]["pixel_values"]) for i in range(30)) == 0


def test_registry_builds_the_shapes_dataset_and_batches_collate():
    ds = build_dataset("shapes", "val", length=8, size=32)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and len(batch["caption"]) == len(batch["spec"]) == 4


def test_export_writes_pngs_and_metadata_lines_atomically(tmp_path):
    out = export_imagefolder(tmp_path / "shapes", n=7, seed=2)
    lines = (out / "metadata.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["file_name"] for r in records] == [f"{i:05d}.png" for i in range(7)]
    assert sorted(p.name for p in out.glob("*.png")) == [r["file_name"] for r in records]
    for record, sample in zip(records, render_dataset(7, seed=2)):
        assert record["text"] == sample.caption and set(record) == {"file_name", "text"}
        assert np.array_equal(np.asarray(Image.open(out / record["file_name"])), sample.image)
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]  # no temporary folder left behind
    with pytest.raises(ShapesError, match="exists"):
        export_imagefolder(out, n=2)
    export_imagefolder(out, n=2, seed=9, overwrite=True)
    assert len(list(out.glob("*.png"))) == 2 and [p.name for p in tmp_path.iterdir()] == ["shapes"]
