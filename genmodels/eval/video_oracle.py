"""Oracle scorer for the moving-shapes world (``genmodels.data.moving_shapes``): objects, motion and identity.

Clips
-----
Square RGB clips, any side >= 24 pixels, as numpy arrays or torch tensors:

- uint8 ``[F, H, W, 3]`` (values 0-255);
- floating point ``[F, H, W, 3]``, ``[3, F, H, W]`` (``MovingShapesDataset`` items, model samples) or
  ``[F, 3, H, W]``, values in ``value_range`` (pass ``(-1, 1)`` for model samples), converted per frame by
  ``shapes_oracle.to_rgb_uint8``.

Each frame is parsed into objects by ``shapes_oracle.detect_objects``, which snaps pixels to the palette, so
lossy video (MP4, yuv420) scores like the lossless clip. Components smaller than ``MIN_AREA_FRACTION`` (0.3)
of the smallest triangle the world draws at that side (``object_sizes``: 11 px at 32 and 64) are specks; this
drops the thin fringes of a neighbouring palette colour (yellow around orange, purple around blue) that chroma
subsampling paints around objects.

Scores (``score_clip``), each a boolean per clip
-----------------------------------------------
Tracking: each described object is anchored at the first frame holding a detection of its shape and colour,
then followed forwards and backwards by nearest-centre matching among detections of its colour (any shape),
at most ``MAX_JUMP_FRACTION`` (0.2) of the side per frame since it was last seen; frames with no candidate
are misses and the search continues from the last position.

- "object": every described object (shape + colour; sizes are not scored) is detected in at least
  ``OBJECT_MIN_FRAMES`` (75 %) of the frames, and in no more than ``EXTRA_MAX_FRAMES`` (half) of the frames does
  an extra object appear: a component outside every track with at least ``EXTRA_AREA_FRACTION`` (0.5) of the
  smallest triangle's area.
- "motion": over the no-bounce window, frames ``0 .. F // 2`` (the world's bounce rule), the least-squares
  displacement of the tracked centre (slope times ``F // 2``; needs 3 tracked frames, so one dropped detection
  is harmless) is at least ``MOTION_MIN_FRACTION`` (1/16: 2 px at 32, 4 px at 64) of the side along the stated
  direction and larger than the cross-axis drift. "still": every tracked centre over the whole clip lies within
  ``STILL_MAX_FRACTION`` (1/20: 1.6 px at 32) of the side from their median, with at least half the frames
  tracked.
- "identity": the track holds a detection of the described shape and colour in at least
  ``IDENTITY_MIN_FRAMES`` (85 %: 7 of 8, 14 of 16 frames); an object that changes colour, changes shape,
  vanishes or jumps away breaks it.
- "all": the three together.

``evaluate`` gives the rate of each key overall and per category. The fixed evaluation set, 30 "single"
prompts (6 per motion) and 30 "two" prompts with generation seeds, is ``moving_shapes_eval_prompts.jsonl``
next to this file (``python -m genmodels.eval.video_oracle --write-eval-set`` rebuilds it).

Generated folders
-----------------
``python -m genmodels.eval.video_oracle FOLDER`` scores ``FOLDER/manifest.jsonl``: one JSON object per clip,
``{"prompt": caption, "file": "0000.mp4" or a folder of PNG frames (sorted by name)}`` plus an optional
``"spec"`` that takes precedence over the prompt. ``write_clip`` writes clips in that convention.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genmodels.data.moving_shapes import (
    CATEGORIES,
    DIRECTIONS,
    EVAL_STREAM,
    MOTIONS,
    check_video_spec,
    free_steps,
    object_sizes,
    parse_video_caption,
    sample_video_spec,
    video_caption_for,
)
from genmodels.data.shapes import object_extent, shape_mask
from genmodels.eval.shapes_oracle import MIN_AREA_FRACTION, Detected, detect_objects, to_rgb_uint8
from genmodels.io import write_text_atomic

EVAL_SET_PATH = Path(__file__).resolve().parent / "moving_shapes_eval_prompts.jsonl"
EVAL_SET_SEED = 2025
EVAL_PROMPTS_PER_CATEGORY = 30

OBJECT_MIN_FRAMES = 0.75
IDENTITY_MIN_FRAMES = 0.85
EXTRA_MAX_FRAMES = 0.5
EXTRA_AREA_FRACTION = 0.5
MOTION_MIN_FRACTION = 1 / 16
STILL_MAX_FRACTION = 1 / 20
MAX_JUMP_FRACTION = 0.2
MIN_MOTION_POINTS = 3
SCORE_KEYS = ("object", "motion", "identity", "all")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")


# ---------------------------------------------------------------------------------------------------------
# Input conversion


def to_clip_uint8(frames, value_range: tuple[float, float] = (0, 255)) -> np.ndarray:
    """``frames`` (module docstring layouts) as uint8 ``[F, H, W, 3]``; ValueError for anything else."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        shape = list(frames.shape) if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"a clip must be a 4-d array [F, H, W, 3], [3, F, H, W] or [F, 3, H, W], got {shape}")
    if frames.shape[-1] != 3:
        if frames.shape[0] == 3:
            frames = np.moveaxis(frames, 0, -1)  # [3, F, H, W]
        elif frames.shape[1] == 3:
            frames = np.moveaxis(frames, 1, -1)  # [F, 3, H, W]
        else:
            raise ValueError(f"a clip needs a channel axis of 3, got shape {list(frames.shape)}")
    if len(frames) == 0:
        raise ValueError("a clip needs at least one frame")
    return np.stack([to_rgb_uint8(frame, value_range) for frame in frames])


def read_clip(path: str | Path) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` from a video file (ffmpeg through imageio) or a folder of PNG frames (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.png"))
        if not files:
            raise ValueError(f"{path} holds no PNG frames")
        frames = []
        for file in files:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        return np.stack(frames)
    if not path.is_file():
        raise FileNotFoundError(f"no clip at {path}")
    import imageio.v3 as iio  # optional dependency (imageio, imageio-ffmpeg), only needed for video files

    return np.asarray(iio.imread(path, plugin="FFMPEG", index=None))[..., :3]


def write_clip(path: str | Path, frames, fps: int = 8, value_range: tuple[float, float] = (0, 255)) -> Path:
    """Write a clip as a video file when ``path`` has a video suffix (H.264 MP4, yuv420p, through imageio's
    ffmpeg), else as a folder of PNG frames ``0000.png ...``; return ``path``."""
    clip, path = to_clip_uint8(frames, value_range), Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        import imageio.v3 as iio

        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, clip, plugin="FFMPEG", fps=fps, macro_block_size=1)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(clip):
            Image.fromarray(frame).save(path / f"{t:04d}.png")
    return path


# ---------------------------------------------------------------------------------------------------------
# Tracking


def smallest_triangle_area(side: int) -> int:
    """Pixels of the smallest triangle the world draws in ``side``-pixel clips (``object_sizes``)."""
    sizes = object_sizes(side) or ("large",)
    return int(min(shape_mask("triangle", object_extent(s, side)).sum() for s in sizes))


def _fits(obj: Detected, description: dict) -> bool:
    return obj.shape == description["shape"] and obj.colour == description["colour"]


def _distance(a: Detected, b: Detected) -> float:
    return float(np.hypot(a.cx - b.cx, a.cy - b.cy))


def track_object(detections: Sequence[Sequence[Detected]], description: dict, side: int) -> list[Detected | None]:
    """The detection of ``description`` in each frame, or None (module docstring: the tracking rule)."""
    track: list[Detected | None] = [None] * len(detections)
    anchor = next((t for t, found in enumerate(detections) if any(_fits(d, description) for d in found)), None)
    if anchor is None:
        return track
    track[anchor] = max((d for d in detections[anchor] if _fits(d, description)), key=lambda d: d.area)
    max_jump = MAX_JUMP_FRACTION * side
    for step in (1, -1):
        last, since = track[anchor], 0
        for t in range(anchor + step, len(detections) if step > 0 else -1, step):
            since += 1
            near = [
                d for d in detections[t] if d.colour == description["colour"] and _distance(d, last) <= max_jump * since
            ]
            if near:
                track[t] = last = min(near, key=lambda d: _distance(d, last))
                since = 0
    return track


def track_displacement(track: list[Detected | None]) -> tuple[float, float] | None:
    """The least-squares displacement ``(dx, dy)`` in pixels of a track's centre over the no-bounce window,
    frames 0 .. F // 2 (slope times F // 2); None with fewer than ``MIN_MOTION_POINTS`` tracked frames there."""
    window = free_steps(len(track))
    points = [(t, d.cx, d.cy) for t, d in enumerate(track) if d is not None and t <= window]
    if len(points) < MIN_MOTION_POINTS:
        return None
    t, xy = np.array([p[0] for p in points], dtype=float), np.array([p[1:] for p in points])
    slope = ((t - t.mean())[:, None] * (xy - xy.mean(0))).sum(0) / ((t - t.mean()) ** 2).sum()
    dx, dy = slope * window
    return float(dx), float(dy)


def _motion_ok(track: list[Detected | None], motion: str, side: int) -> bool:
    points = [(t, d.cx, d.cy) for t, d in enumerate(track) if d is not None]
    if motion == "still":
        if len(points) < len(track) / 2:
            return False
        xy = np.array([p[1:] for p in points])
        return bool(np.hypot(*(xy - np.median(xy, 0)).T).max() <= STILL_MAX_FRACTION * side)
    moved = track_displacement(track)
    if moved is None:
        return False
    (dx, dy), (ux, uy) = moved, DIRECTIONS[motion]
    along, across = dx * ux + dy * uy, abs(dx * uy) + abs(dy * ux)
    return bool(along >= MOTION_MIN_FRACTION * side and along > across)


@dataclass(frozen=True)
class ClipAnalysis:
    """What the oracle saw: ``detections`` per frame, ``tracks`` per described object (a detection or None per
    frame), the ``scores`` (``SCORE_KEYS`` -> bool) and the clip's ``side`` in pixels."""

    detections: list[list[Detected]]
    tracks: list[list[Detected | None]]
    scores: dict[str, bool]
    side: int


def analyse_clip(frames, spec: dict | str, value_range: tuple[float, float] = (0, 255)) -> ClipAnalysis:
    """Detections, tracks and scores of a clip against ``spec`` (a spec dict or a caption)."""
    spec = check_video_spec(parse_video_caption(spec) if isinstance(spec, str) else spec)
    clip = to_clip_uint8(frames, value_range)
    n, side = len(clip), clip.shape[1]
    reference = smallest_triangle_area(side)
    min_area = max(1, int(MIN_AREA_FRACTION * reference))
    detections = [detect_objects(frame, min_area=min_area) for frame in clip]
    tracks = [track_object(detections, obj, side) for obj in spec["objects"]]

    present = [sum(any(_fits(d, obj) for d in found) for found in detections) / n for obj in spec["objects"]]
    extra_frames = sum(
        any(d.area >= EXTRA_AREA_FRACTION * reference and all(d is not tr[t] for tr in tracks) for d in found)
        for t, found in enumerate(detections)
    )
    held = [sum(d is not None and _fits(d, obj) for d in tr) / n for obj, tr in zip(spec["objects"], tracks)]
    scores = {
        "object": min(present) >= OBJECT_MIN_FRAMES and extra_frames <= EXTRA_MAX_FRAMES * n,
        "motion": all(_motion_ok(tr, obj["motion"], side) for obj, tr in zip(spec["objects"], tracks)),
        "identity": min(held) >= IDENTITY_MIN_FRAMES,
    }
    scores["all"] = all(scores.values())
    return ClipAnalysis(detections, tracks, scores, side)


# ---------------------------------------------------------------------------------------------------------
# Scoring


def score_clip(frames, spec: dict | str, value_range: tuple[float, float] = (0, 255)) -> dict[str, bool]:
    """``{"object", "motion", "identity", "all"}`` booleans of a clip against ``spec`` (dict or caption)."""
    return analyse_clip(frames, spec, value_range).scores


def evaluate(clips, specs: Sequence[dict | str], value_range: tuple[float, float] = (0, 255)) -> dict:
    """Scores of ``clips`` (a sequence of clips, or one array ``[N, ...]``) against ``specs``, one per clip.

    Returns ``{key: rate for key in SCORE_KEYS, "per_category": {category: {key: rate}}, "counts": {category:
    clips}, "n": clips, "scores": [per-clip score dicts], "motion_breakdown": (as :func:`motion_breakdown`)}``;
    categories without clips are left out.
    """
    specs = [check_video_spec(parse_video_caption(s) if isinstance(s, str) else s) for s in specs]
    clips = list(clips)
    if len(clips) != len(specs) or not specs:
        raise ValueError(f"need one spec per clip and at least one clip, got {len(clips)} clips, {len(specs)} specs")
    analyses = [analyse_clip(clip, spec, value_range) for clip, spec in zip(clips, specs, strict=True)]
    scores = [a.scores for a in analyses]
    result = {key: float(np.mean([s[key] for s in scores])) for key in SCORE_KEYS}
    result["per_category"], result["counts"] = {}, {}
    for category in CATEGORIES:
        mine = [s for s, spec in zip(scores, specs) if spec["category"] == category]
        if mine:
            result["per_category"][category] = {key: float(np.mean([s[key] for s in mine])) for key in SCORE_KEYS}
            result["counts"][category] = len(mine)
    result["n"], result["scores"] = len(scores), scores
    result["motion_breakdown"] = _breakdown(analyses, specs)
    return result


def motion_breakdown(clips, specs: Sequence[dict | str], value_range: tuple[float, float] = (0, 255)) -> dict:
    """Where motion fails: for every described object that should move, how its track moved over the no-bounce
    window. Fractions of those objects: "untracked" (fewer than ``MIN_MOTION_POINTS`` tracked frames there),
    "static" (displacement below ``MOTION_MIN_FRACTION`` of the side), "wrong_direction" (moved that far, but
    not as the motion rule wants), "correct" (the rule holds); and "n", the objects counted (0: all rates 0).
    :func:`evaluate` reports the same under "motion_breakdown"."""
    specs = [check_video_spec(parse_video_caption(s) if isinstance(s, str) else s) for s in specs]
    return _breakdown([analyse_clip(c, s, value_range) for c, s in zip(clips, specs, strict=True)], specs)


def _breakdown(analyses: Sequence[ClipAnalysis], specs: Sequence[dict]) -> dict:
    counts = dict.fromkeys(("untracked", "static", "wrong_direction", "correct"), 0)
    for analysis, spec in zip(analyses, specs, strict=True):
        for obj, track in zip(spec["objects"], analysis.tracks):
            if obj["motion"] == "still":
                continue
            moved = track_displacement(track)
            if moved is None:
                counts["untracked"] += 1
            elif _motion_ok(track, obj["motion"], analysis.side):
                counts["correct"] += 1
            elif np.hypot(*moved) < MOTION_MIN_FRACTION * analysis.side:
                counts["static"] += 1
            else:
                counts["wrong_direction"] += 1
    n = sum(counts.values())
    return {**{k: v / n if n else 0.0 for k, v in counts.items()}, "n": n}


def evaluate_folder(folder: str | Path) -> dict:
    """``evaluate`` on a generated folder (module docstring: ``manifest.jsonl`` with prompts and files)."""
    folder = Path(folder)
    clips, specs = [], []
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            clips.append(read_clip(folder / record["file"]))
            specs.append(record.get("spec") or record["prompt"])
    return evaluate(clips, specs)


# ---------------------------------------------------------------------------------------------------------
# Fixed evaluation set


def make_video_eval_set(seed: int = EVAL_SET_SEED, per_category: int = EVAL_PROMPTS_PER_CATEGORY) -> list[dict]:
    """The evaluation prompts, ``{"id", "category", "prompt", "seed", "spec"}`` each, 32 px and 8 frames:
    ``per_category`` "single" prompts (motions in turn, so each of the 5 comes ``per_category / 5`` times) and
    ``per_category`` "two" prompts (motions drawn at random). ``seed`` is the generation seed for the prompt.

    Drawn like training captions from the stream ``(seed, EVAL_STREAM, category, i)``, disjoint from the
    dataset's ``(seed, split, index)`` streams.
    """
    items = []
    for c, category in enumerate(CATEGORIES):
        for i in range(per_category):
            rng = np.random.default_rng([seed, EVAL_STREAM, c, i])
            spec = sample_video_spec(category, rng)
            if category == "single":
                spec["objects"][0]["motion"] = MOTIONS[i % len(MOTIONS)]
            items.append(
                {
                    "id": f"{category}-{i:02d}",
                    "category": category,
                    "prompt": video_caption_for(spec, rng),
                    "seed": int(rng.integers(2**31)),
                    "spec": spec,
                }
            )
    return items


def write_video_eval_set(path: str | Path = EVAL_SET_PATH, seed: int = EVAL_SET_SEED) -> Path:
    """Write ``make_video_eval_set(seed)`` as JSON lines to ``path`` (atomically)."""
    return write_text_atomic(path, "".join(json.dumps(item) + "\n" for item in make_video_eval_set(seed)))


def load_video_eval_set(path: str | Path = EVAL_SET_PATH) -> list[dict]:
    """The evaluation prompts stored at ``path`` (one JSON object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genmodels.eval.video_oracle", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="a folder with manifest.jsonl to score")
    parser.add_argument("--per-clip", action="store_true", help="also print every clip's scores")
    parser.add_argument(
        "--write-eval-set",
        nargs="?",
        const=str(EVAL_SET_PATH),
        metavar="PATH",
        help=f"write the fixed evaluation prompts (default {EVAL_SET_PATH.name} in this package)",
    )
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.write_eval_set is None):
        parser.error("give either FOLDER or --write-eval-set")
    if args.write_eval_set:
        print(write_video_eval_set(args.write_eval_set))
        return 0
    result = evaluate_folder(args.folder)
    if not args.per_clip:
        result.pop("scores")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
