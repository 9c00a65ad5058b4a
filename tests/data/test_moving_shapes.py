"""Moving-shapes world: clips, motion and bounces, non-overlap, captions and their grammar, the dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from genmodels.data import build_dataset
from genmodels.data.moving_shapes import (
    CATEGORIES,
    DIRECTIONS,
    MOTIONS,
    MovingShapesDataset,
    MovingShapesError,
    VideoCaptionError,
    bounce_path,
    centre_limits,
    check_video_spec,
    clip_for_spec,
    free_steps,
    make_clip,
    object_sizes,
    object_speeds,
    parse_video_caption,
)
from genmodels.data.shapes import COLOURS, ShapeObject, ShapesError, boxes_apart, object_gap, render_scene

N = 500


@pytest.fixture(scope="module")
def clips():
    return [make_clip(i, seed=11) for i in range(N)]


@pytest.fixture(scope="module")
def long_clips():
    """Clips long enough to bounce: 16 frames at both sides."""
    return [make_clip(i, seed=12, size=size, frames=16) for size in (32, 64) for i in range(150)]


def steps(track) -> np.ndarray:
    """Per-frame moves ``[F - 1, 2]`` (dx, dy) of a track."""
    return np.diff(np.asarray(track), axis=0)


def naive_bounce(start: int, velocity: int, frames: int, low: int, high: int) -> list[int]:
    """Step by step: move, and reflect the overshoot off a limit while flipping the velocity."""
    path, p, v = [], start, velocity
    for _ in range(frames):
        path.append(p)
        p += v
        if p > high:
            p, v = 2 * high - p, -v
        elif p < low:
            p, v = 2 * low - p, -v
    return path


# ---------------------------------------------------------------------------------------------------------
# Clips


def test_same_index_gives_the_same_clip_and_other_splits_or_seeds_differ():
    a, b = make_clip(7, seed=3), make_clip(7, seed=3)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption and a.spec == b.spec and a.tracks == b.tracks
    train = [make_clip(i, seed=3) for i in range(20)]
    val = [make_clip(i, seed=3, split="val") for i in range(20)]
    other_seed = [make_clip(i, seed=4) for i in range(20)]
    assert sum(np.array_equal(x.frames, y.frames) for x, y in zip(train, val)) == 0
    assert sum(np.array_equal(x.frames, y.frames) for x, y in zip(train, other_seed)) == 0


def test_clip_format_spec_and_categories(clips):
    for i, clip in enumerate(clips[:50]):
        assert clip.frames.shape == (8, 32, 32, 3) and clip.frames.dtype == np.uint8
        assert clip.spec["category"] == CATEGORIES[i % 2] and clip.spec["frames"] == 8 and clip.spec["size"] == 32
        assert len(clip.spec["objects"]) == len(clip.tracks) == (1 if clip.spec["category"] == "single" else 2)
        assert all(len(track) == 8 for track in clip.tracks)
        assert json.loads(json.dumps(clip.spec)) == check_video_spec(clip.spec)
    assert make_clip(0, size=64, frames=16).frames.shape == (16, 64, 64, 3)
    motions = [obj["motion"] for clip in clips for obj in clip.spec["objects"]]
    assert {m: motions.count(m) / len(motions) for m in MOTIONS} == pytest.approx(dict.fromkeys(MOTIONS, 0.2), abs=0.05)


def test_frames_are_the_rendered_objects_at_their_tracks(clips):
    for clip in clips[:60]:
        for t, frame in enumerate(clip.frames):
            scene = [
                ShapeObject(o["shape"], o["colour"], o["size"], *tr[t])
                for o, tr in zip(clip.spec["objects"], clip.tracks)
            ]
            assert np.array_equal(frame, render_scene(scene, 32))


def test_only_sizes_of_at_least_nine_pixels_are_drawn(clips):
    assert object_sizes(32) == ("large",) and object_sizes(64) == ("small", "large")
    assert {o["size"] for clip in clips for o in clip.spec["objects"]} == {"large"}
    sizes = {o["size"] for i in range(60) for o in make_clip(i, size=64).spec["objects"]}
    assert sizes == {"small", "large"}


def test_objects_stay_inside_the_image_with_a_free_border_pixel(clips, long_clips):
    for clip in clips + long_clips:
        side = clip.spec["size"]
        for obj, track in zip(clip.spec["objects"], clip.tracks):
            for cx, cy in track:
                x0, y0, x1, y1 = ShapeObject(obj["shape"], obj["colour"], obj["size"], cx, cy).bbox(side)
                assert 1 <= x0 and 1 <= y0 and x1 <= side - 1 and y1 <= side - 1
        assert not clip.frames[:, [0, -1]].any() and not clip.frames[:, :, [0, -1]].any()


def test_objects_move_as_captioned_until_mid_clip(clips, long_clips):
    for clip in clips + long_clips:
        side, half = clip.spec["size"], free_steps(clip.spec["frames"])
        for obj, track in zip(clip.spec["objects"], clip.tracks):
            moves = steps(track)[:half]
            if obj["motion"] == "still":
                assert not steps(track).any(), clip.caption
                continue
            direction = np.array(DIRECTIONS[obj["motion"]])
            speed = moves[0] @ direction
            assert speed in object_speeds(side), clip.caption
            assert (moves == speed * direction).all(), (clip.caption, track)
    assert object_speeds(32) == (1, 2) and object_speeds(64) == (2, 3, 4)


def test_bounce_flips_the_velocity_at_the_border_and_keeps_the_object_inside(long_clips):
    bounces = 0
    for clip in long_clips:
        for obj, track in zip(clip.spec["objects"], clip.tracks):
            low, high = centre_limits(obj["size"], clip.spec["size"])
            axis = 0 if obj["motion"] in ("left", "right") else 1
            positions = np.asarray(track)[:, axis]
            assert ((low <= positions) & (positions <= high)).all()
            moves = np.diff(positions)
            speed = abs(int(moves[0])) if len(moves) else 0
            moving = np.flatnonzero(moves)
            for i, j in zip(moving[:-1], moving[1:]):
                if moves[i] * moves[j] < 0:  # the direction flipped: it must have reached the limit ahead
                    bounces += 1
                    turn = positions[i + 1]
                    assert (high - turn if moves[i] > 0 else turn - low) < speed, (clip.caption, track)
    assert bounces >= 50


def test_bounce_path_matches_step_by_step_reflection():
    rng = np.random.default_rng(0)
    for _ in range(300):
        low, high = (int(v) for v in sorted(rng.integers(3, 60, size=2)))
        high += 1
        velocity = int(rng.integers(-(high - low), high - low + 1))
        start = int(rng.integers(low, high + 1))
        expected = naive_bounce(start, velocity, 16, low, high)
        assert bounce_path(start, velocity, 16, low, high).tolist() == expected


def test_two_objects_never_overlap_and_differ_in_colour_or_shape(clips, long_clips):
    pairs = [c for c in clips + long_clips if c.spec["category"] == "two"]
    assert len(pairs) >= 400
    for clip in pairs:
        side = clip.spec["size"]
        a, b = clip.spec["objects"]
        assert (a["shape"], a["colour"]) != (b["shape"], b["colour"])
        for (xa, ya), (xb, yb) in zip(*clip.tracks):
            box_a = ShapeObject(a["shape"], a["colour"], a["size"], xa, ya).bbox(side)
            box_b = ShapeObject(b["shape"], b["colour"], b["size"], xb, yb).bbox(side)
            assert boxes_apart(box_a, box_b, object_gap(side)), clip.caption


# ---------------------------------------------------------------------------------------------------------
# Captions


def test_parse_video_caption_round_trips_every_generated_caption(clips):
    for clip in clips:
        parsed = parse_video_caption(clip.caption)
        expected = [{**o, "size": None} for o in clip.spec["objects"]]
        assert parsed == {"category": clip.spec["category"], "objects": expected, "frames": None, "size": None}
    assert len({clip.caption for clip in clips}) > 300


@pytest.mark.parametrize(
    ("caption", "objects"),
    [
        ("a red circle moves to the right", [("circle", "red", "right")]),
        ("A blue square stays still.", [("square", "blue", "still")]),
        ("a video of an orange triangle moving upwards", [("triangle", "orange", "up")]),
        (
            "a red circle moves left and a blue square moves down",
            [("circle", "red", "left"), ("square", "blue", "down")],
        ),
        (
            "a green square goes up while a green circle does not move",
            [("square", "green", "up"), ("circle", "green", "still")],
        ),
    ],
)
def test_parse_video_caption_examples(caption, objects):
    spec = parse_video_caption(caption, frames=8, size=32)
    assert [(o["shape"], o["colour"], o["motion"]) for o in spec["objects"]] == objects
    assert spec["category"] == ("single" if len(objects) == 1 else "two") and spec["frames"] == 8


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "a red circle",
        "a circle moves left",
        "a red circle moves diagonally",
        "a pink circle moves left",
        "a red hexagon moves left",
        "two red circles move left",
        "a red circle moves left and a red circle moves right",
        "a red circle moves left and a blue square moves down and a green triangle moves up",
        "a red circle moves left,",
    ],
)
def test_parse_video_caption_rejects_junk(junk):
    with pytest.raises(VideoCaptionError):
        parse_video_caption(junk)


def test_parse_video_caption_rejects_non_strings_with_a_value_error():
    with pytest.raises(ValueError):
        parse_video_caption(None)


def test_clip_for_spec_renders_any_parsed_caption():
    spec = parse_video_caption("a yellow triangle moves down and a purple circle stays still")
    clip = clip_for_spec(spec, seed=5)
    assert clip.frames.shape == (8, 32, 32, 3) and parse_video_caption(clip.caption)["objects"] == spec["objects"]
    assert [o["motion"] for o in clip.spec["objects"]] == ["down", "still"] and clip.spec["size"] == 32
    assert np.array_equal(clip_for_spec(spec, seed=5).frames, clip.frames)
    assert clip_for_spec(spec, seed=5, size=64, frames=12).frames.shape == (12, 64, 64, 3)
    small = {**spec, "objects": [{**o, "size": "small"} for o in spec["objects"]], "size": 64}
    assert {o["size"] for o in clip_for_spec(small, size=32).spec["objects"]} == {"large"}  # 5 px is too small


# ---------------------------------------------------------------------------------------------------------
# Dataset


def test_dataset_items_are_channels_then_time_in_minus_one_to_one():
    data = MovingShapesDataset("val", length=4)
    item = data[1]
    clip = make_clip(1, split="val")
    assert item["pixel_values"].shape == (3, 8, 32, 32) and item["pixel_values"].dtype == torch.float32
    expected = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.equal(item["pixel_values"], expected)
    assert item["caption"] == clip.caption and item["category"] == "two" and json.loads(item["spec"]) == clip.spec
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 8, 32, 32) and len(batch["spec"]) == 4
    with pytest.raises(IndexError):
        data[4]


def test_dataset_registry_and_default_lengths():
    data = build_dataset("moving_shapes", "train", size=64, frames=12, categories=["single"])
    assert isinstance(data, MovingShapesDataset) and len(data) == 60_000 and len(MovingShapesDataset("val")) == 1_200
    item = data[3]
    assert item["pixel_values"].shape == (3, 12, 64, 64) and item["category"] == "single"
    with pytest.raises(ValueError):
        build_dataset("moving_shapes", "train", colours=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frames": 7},
        {"frames": 17},
        {"frames": 8.0},
        {"size": 48},
        {"size": 24},
        {"categories": ["three"]},
        {"categories": []},
        {"split": "test"},
        {"index": -1},
        {"seed": -2},
    ],
)
def test_bad_clip_arguments_raise_value_errors(kwargs):
    with pytest.raises(MovingShapesError):
        make_clip(**{"index": 0, **kwargs})
    assert issubclass(MovingShapesError, ShapesError) and issubclass(MovingShapesError, ValueError)


@pytest.mark.parametrize("kwargs", [{"split": "test"}, {"length": 0}, {"frames": 20}, {"size": 16}, {"seed": -1}])
def test_bad_dataset_arguments_raise_value_errors(kwargs):
    with pytest.raises(MovingShapesError):
        MovingShapesDataset(**kwargs)


@pytest.mark.parametrize(
    "spec",
    [
        {"category": "single", "objects": [], "frames": 8, "size": 32},
        {"category": "single", "objects": [{"shape": "circle", "colour": "red", "size": None, "motion": "sideways"}]},
        {"category": "single", "objects": [{"shape": "circle", "colour": None, "size": None, "motion": "left"}]},
        {"category": "four", "objects": []},
    ],
)
def test_malformed_specs_are_rejected(spec):
    with pytest.raises(MovingShapesError):
        check_video_spec(spec)


def test_clips_use_only_the_palette_colours():
    # rendering speed is a benchmark (benchmarks/data_speed.py), not a test
    assert set(COLOURS) >= {o["colour"] for i in range(50) for o in make_clip(i).spec["objects"]}


def test_reverse_direction_swaps_every_direction_word_only():
    from genmodels.data.moving_shapes import reverse_direction

    assert reverse_direction("a red circle moves to the left") == "a red circle moves to the right"
    assert reverse_direction("a clip of a blue square moving upwards") == "a clip of a blue square moving downwards"
    assert reverse_direction("a green triangle goes down and a red circle goes up") == (
        "a green triangle goes up and a red circle goes down")
    assert reverse_direction("a yellow square stays still") == "a yellow square stays still"


def test_filmstrip_puts_four_frames_in_reading_order():
    from genmodels.data.moving_shapes import FilmstripDataset, MovingShapesDataset, MovingShapesError, filmstrip

    clip = torch.arange(8, dtype=torch.float32)[None, :, None, None].expand(3, 8, 4, 4)
    strip = filmstrip(clip)
    assert strip.shape == (3, 8, 8)
    assert strip[0, 0, 0] == 0 and strip[0, 0, 4] == 2 and strip[0, 4, 0] == 4 and strip[0, 4, 4] == 6
    with pytest.raises(MovingShapesError, match="F ≥ 4"):
        filmstrip(clip[:, :3])
    data = FilmstripDataset("val", 64, length=3)
    item, source = data[1], MovingShapesDataset("val", size=32, frames=8, length=3)[1]
    assert item["pixel_values"].shape == (3, 64, 64) and item["caption"] == source["caption"]
    assert torch.equal(item["pixel_values"][:, 32:, :32], source["pixel_values"][:, 4])
    with pytest.raises(MovingShapesError, match="even side"):
        FilmstripDataset("val", 63)


def test_still_caption_and_motion_negative():
    from genmodels.data.moving_shapes import (
        VideoCaptionError,
        motion_negative,
        parse_video_caption,
        still_caption,
    )

    two = "A video of a red circle moving to the left and a blue square moving upwards."
    assert still_caption(two) == "a video of a red circle standing still and a blue square standing still"
    assert still_caption("a green triangle goes right while a red square stays still") == \
        "a green triangle stays still while a red square stays still"
    spec = parse_video_caption(still_caption(two))
    assert [o["motion"] for o in spec["objects"]] == ["still", "still"]
    assert [o["shape"] for o in spec["objects"]] == ["circle", "square"]
    assert motion_negative("a red circle is moving down") == "a red circle stays still"
    assert motion_negative("a green circle standing still") is None  # nothing moves: keep the null text
    with pytest.raises(VideoCaptionError, match="outside the moving-shapes caption grammar"):
        still_caption("a dog runs left")
