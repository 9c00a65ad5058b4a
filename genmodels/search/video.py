"""Test-time search over text-to-video clips: a generate fn, a chunk generator for Tree-of-Frames, two verifiers.

- ``text_to_video_generate_fn``: best-of-N / tournaments over seeds with a ``TextToVideoPipeline`` (one clip
  ``[F, H, W, 3]`` uint8 per seed).
- ``VideoChunkGenerator``: Tree-of-Frames over chunks of ``frames_per_unit`` frames by continuation: a unit is
  made by one pipeline call that continues the branch's frames (``first_frames``) to a full clip, of which the
  branch keeps ``frames_per_unit`` more frames.
- ``CLIPVideoVerifier`` ("clip-video"): per-frame CLIP score of the prompt's objects, temporal consistency of the
  frames' CLIP embeddings and a pixel-path heuristic. Not the evaluator: use it for headline numbers.
- ``VideoOracleVerifier`` ("oracle"): the moving-shapes oracle (``genmodels.eval.video_oracle``), the evaluator
  itself; for coverage / upper bounds only (``is_oracle``).

Cost: the DiM generates every frame of a clip jointly, so by default a unit costs one whole pipeline call (its NFE)
per candidate whatever the number of frames it keeps; a branch of U units costs U calls where one plain clip costs
one. Tree-of-Frames pays this back only by pruning (``video_tree_config``). With ``grow=True`` a unit's call
denoises only the frames the branch has after it (the given frames plus the new unit, not the rest of the clip):
the same number of denoiser calls on shorter clips, and since the DiM is linear in tokens its compute is
``clip_nfe`` = Σ NFE × frames / num_frames (clip-equivalent NFE; a full clip's NFE for one plain clip).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genmodels.search.sampling import GenerateFn, generators
from genmodels.search.tree_of_frames import TreeConfig, UnitBatch, default_stage, motion_from_start_stage
from genmodels.search.verifiers import CLIPScoreVerifier, Verifier

ORACLE_KEYS = ("object", "motion", "identity")
# Keys the oracle verifier counts at each Tree-of-Frames stage: motion needs 3 tracked frames inside the
# no-bounce window (frames 0 .. F // 2), so the first unit alone cannot show it and would score 0 everywhere.
DEFAULT_STAGE_KEYS: dict[str | None, tuple[str, ...]] = {"start": ("object", "identity")}
# A pixel counts as part of an object when its brightest channel reaches this (background is black, every
# palette colour has a channel ≥ 190); chosen here, independent of the oracle's palette snapping.
BRIGHT_THRESHOLD = 96


def clips_to_uint8(outputs: Sequence[Any]) -> list[np.ndarray]:
    """Clips as uint8 ``[F, H, W, 3]`` arrays (checked; a ``[N, F, H, W, 3]`` array counts as N clips)."""
    clips = [np.asarray(o) for o in outputs]
    for c in clips:
        if c.ndim != 4 or c.shape[-1] != 3 or c.dtype != np.uint8 or len(c) == 0:
            raise ValueError(f"clips must be uint8 [F, H, W, 3] with F ≥ 1, got {c.dtype} {list(c.shape)}")
    return clips


# Generation


def text_to_video_generate_fn(pipe, prompt: str, **call_kwargs) -> GenerateFn:
    """Generate fn over a ``TextToVideoPipeline``: candidate i is ``prompt`` with ``torch.Generator(seed_i)``.

    Outputs are uint8 clips ``[F, H, W, 3]``; ``call_kwargs`` go to the pipeline (``num_frames``,
    ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``, and ``first_frames``: one clip
    ``[K, H, W, 3]`` that every candidate continues, its frames kept exactly). The reported NFE is the
    pipeline's (one CFG-batched call over the batch counts once).
    """
    if not getattr(pipe, "accepts_generator_list", False):
        raise ValueError(f"{type(pipe).__name__} does not take one generator per clip; batched search needs it")

    def generate(seeds: list[int]) -> tuple[list[np.ndarray], int]:
        out = pipe([prompt] * len(seeds), generator=generators(seeds), output_type="np", **call_kwargs)
        return list(out.frames), int(out.nfe)

    return generate


class VideoChunkGenerator:
    """A ``UnitGenerator`` for Tree-of-Frames: a clip of ``num_frames`` frames made ``frames_per_unit`` at a time.

    A state is the frames so far, uint8 ``[k, H, W, 3]``. ``start(n, seeds)`` draws n full clips (one generator
    per seed) and keeps the first ``frames_per_unit`` frames of each; ``extend(state, n, seeds)`` draws n full
    clips that continue ``state`` (``first_frames=state`` for all n, batched, one generator per seed; the given
    frames come back bit-exactly) and keeps ``len(state) + frames_per_unit`` frames (at most ``num_frames``).
    ``first_frames`` in ``call_kwargs`` is a primer ``[K, H, W, 3]``: every branch starts from it and ``start``
    already continues it. ``num_units = ceil((num_frames − K) / frames_per_unit)``.

    NFE of a call: the pipeline's NFE × n (every candidate is a whole clip's denoising, whatever it keeps).
    ``grow=True``: each call denoises only the frames kept (``len(state) + frames_per_unit``), not the whole clip.
    ``clip_nfe`` accumulates the calls' NFE × denoised frames / ``num_frames`` (compute in whole-clip NFE; equal to
    the NFE without ``grow``).
    ``extend_steps``: denoising steps of the units after the first (``extend``), when they should differ from
    ``num_inference_steps``: continuing is a temporal inpainting with most of the clip's content fixed, and a tree
    can spend fewer steps there than on its first unit. The first unit (``start``) keeps ``num_inference_steps``,
    also when it continues given frames: it decides the clip's motion. The NFE counts whatever steps ran.
    ``preview_steps``: the steps of ``preview(parent, n, seeds)``, the same draw as ``start`` / ``extend`` with
    those seeds at fewer steps (a deterministic sampler from the same noise), which a tree with
    ``TreeConfig.screen`` ranks to choose the seeds it draws in full.
    ``call_kwargs``: ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``.
    """

    def __init__(self, pipe, prompt: str, num_frames: int | None = None, frames_per_unit: int = 2,
                 grow: bool = False, extend_steps: int | None = None, preview_steps: int | None = None,
                 **call_kwargs):
        if not getattr(pipe, "accepts_generator_list", False):
            raise ValueError(f"{type(pipe).__name__} does not take one generator per clip, which the tree needs")
        self.pipe, self.prompt = pipe, prompt
        self.num_frames = int(num_frames or pipe.default_frames)
        primer = call_kwargs.pop("first_frames", None)
        self.primer = None if primer is None else clips_to_uint8([primer])[0]
        self.call_kwargs = call_kwargs
        given = 0 if self.primer is None else len(self.primer)
        if isinstance(frames_per_unit, bool) or not isinstance(frames_per_unit, (int, np.integer)) \
                or not 1 <= frames_per_unit <= self.num_frames - given:
            raise ValueError(f"frames_per_unit must be in 1..{self.num_frames - given} (the frames to generate), "
                             f"got {frames_per_unit!r}")
        self.frames_per_unit = int(frames_per_unit)
        self.num_units = math.ceil((self.num_frames - given) / self.frames_per_unit)
        self.grow = bool(grow)
        if extend_steps is not None and (isinstance(extend_steps, bool) or not isinstance(extend_steps, int)
                                         or extend_steps < 1):
            raise ValueError(f"extend_steps must be a positive integer or None, got {extend_steps!r}")
        self.extend_steps = extend_steps
        if preview_steps is not None and (isinstance(preview_steps, bool) or not isinstance(preview_steps, int)
                                          or preview_steps < 1):
            raise ValueError(f"preview_steps must be a positive integer or None, got {preview_steps!r}")
        self.preview_steps = preview_steps
        self.clip_nfe = 0.0

    def extra_repr(self) -> str:
        return (f"num_frames={self.num_frames}, frames_per_unit={self.frames_per_unit}, num_units={self.num_units}, "
                f"grow={self.grow}, extend_steps={self.extend_steps}, preview_steps={self.preview_steps}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def output(self, state: np.ndarray) -> np.ndarray:
        """The frames so far, ``[k, H, W, 3]`` uint8."""
        return state

    def verifier_context(self, depth: int) -> dict:
        """``{"frames": frames so far after this depth, "num_frames": the clip's length}``."""
        given = 0 if self.primer is None else len(self.primer)
        return {"frames": min(given + (depth + 1) * self.frames_per_unit, self.num_frames),
                "num_frames": self.num_frames}

    def _draw(self, first: np.ndarray | None, keep: int, seeds: list[int], steps: int | None = None) -> UnitBatch:
        frames = keep if self.grow else self.num_frames
        kwargs = self.call_kwargs if steps is None else {**self.call_kwargs, "num_inference_steps": steps}
        out = self.pipe([self.prompt] * len(seeds), num_frames=frames, first_frames=first,
                        generator=generators(seeds), output_type="np", **kwargs)
        nfe = int(out.nfe) * len(seeds)
        self.clip_nfe += nfe * frames / self.num_frames
        return UnitBatch(states=[np.ascontiguousarray(clip[:keep]) for clip in out.frames], nfe=nfe)

    def start(self, n_candidates: int, seeds: list[int]) -> UnitBatch:
        if self.primer is not None:
            keep = min(len(self.primer) + self.frames_per_unit, self.num_frames)
            return self._draw(self.primer, keep, seeds[:n_candidates])
        return self._draw(None, self.frames_per_unit, seeds[:n_candidates])

    def extend(self, state: np.ndarray, n_candidates: int, seeds: list[int]) -> UnitBatch:
        if len(state) >= self.num_frames:
            raise ValueError(f"the clip is complete ({self.num_frames} frames); nothing left to extend")
        return self._draw(state, min(len(state) + self.frames_per_unit, self.num_frames), seeds[:n_candidates],
                          self.extend_steps)

    def preview(self, parent: np.ndarray | None, n_candidates: int, seeds: list[int]) -> UnitBatch:
        """``start`` (``parent`` None) or ``extend(parent, …)`` at ``preview_steps`` denoising steps."""
        if self.preview_steps is None:
            raise ValueError("this VideoChunkGenerator has no preview_steps; pass preview_steps=… to screen units")
        if parent is None:
            first = self.primer
            keep = self.frames_per_unit if first is None else min(len(first) + self.frames_per_unit, self.num_frames)
        else:
            if len(parent) >= self.num_frames:
                raise ValueError(f"the clip is complete ({self.num_frames} frames); nothing left to extend")
            first, keep = parent, min(len(parent) + self.frames_per_unit, self.num_frames)
        return self._draw(first, keep, seeds[:n_candidates], self.preview_steps)


# The Tree-of-Frames defaults of `lingen generate --search tree-of-frames` and the app's Video tab: the configuration
# that reached best-of-N's best score at 0.30-0.60x of its compute in BENCHMARKS.md ("A first unit that shows
# motion, judged on it"): two units (the first long enough to show motion, judged with the motion terms), units
# denoising only their branch's frames, continuations at 40 % of the steps.
TREE_UNITS = 2
TREE_GROW_UNITS = True
TREE_EXTEND_FRACTION = 0.4
TREE_FIRST_STAGES = {"motion": motion_from_start_stage, "start": default_stage}
TREE_FIRST_STAGE = "motion"
# drafts per root's first unit when a tree screens by previews (`lingen generate --preview-steps`)
TREE_SCREEN = 6
# searching on drafts as measured in BENCHMARKS.md ("Video: screening by drafts"): drafts at 4 of 20 steps; a tree
# continues each surviving branch twice (the verifier's best kept); best-of-N draws ⌈N/4⌉ best drafts in full
DRAFT_FRACTION = 0.2
TREE_DRAFT_EXTEND = 2


def draft_steps(steps: int, fraction: float = DRAFT_FRACTION) -> int:
    """Denoising steps of a draft: ``fraction`` of ``steps``, rounded, at least 1 and fewer than ``steps`` (4 of
    20); ValueError for ``steps`` < 2, where a draft could not be cheaper than the clip."""
    if steps < 2 or not 0 < fraction < 1:
        raise ValueError(f"drafts need at least 2 steps (a draft is drawn at fewer steps than the clip) and a "
                         f"fraction in (0, 1), got {steps} steps, fraction {fraction}")
    return min(steps - 1, max(1, round(fraction * steps)))


def drafts_drawn_in_full(n: int) -> int:
    """best-of-N on drafts: how many of the best drafts are drawn in full, ⌈N/4⌉ (`lingen generate`'s default
    ``--preview-keep``)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return -(-n // 4)


def tree_frames_per_unit(to_make: int, units: int = TREE_UNITS) -> int:
    """Frames per unit so that ``to_make`` frames take at most ``units`` units (rounded up)."""
    if to_make < 1 or units < 1:
        raise ValueError(f"to_make and units must be at least 1, got {to_make}, {units}")
    return -(-to_make // units)


def tree_extend_steps(steps: int, fraction: float = TREE_EXTEND_FRACTION) -> int:
    """Denoising steps of a continuation: ``fraction`` of ``steps``, rounded up (8 of 20)."""
    if steps < 1 or not 0 < fraction <= 1:
        raise ValueError(f"steps must be at least 1 and fraction in (0, 1], got {steps}, {fraction}")
    return max(1, math.ceil(fraction * steps))


def video_tree_config(n: int, num_units: int, first_candidates: int = 2, screen: int = 0,
                      extend_candidates: int = 1) -> TreeConfig:
    """Video-T1's Tree-of-Frames schedule (``TreeConfig.video_t1``) scaled to ``n`` roots and ``num_units`` units.

    - ``branches``: ``n`` roots (Video-T1: 8), then one child per live branch (as Video-T1);
    - ``candidates``: the first unit is the best of ``first_candidates`` draws (Video-T1: 5, then 2), every later
      unit one draw (here a draw costs a whole clip's NFE, so per-unit best-of is kept to the start);
    - ``judge_depths``: Video-T1's relative depths 4/16, 9/16, 13/16, i.e. ``floor(f · U)``, those before the
      last unit (the final best-of over the leaves judges the last one); with 16 units exactly 4, 9, 13;
    - ``screen``: with ``screen`` > 0 each root's first unit is chosen among that many cheap previews, the
      ``first_candidates`` best drawn in full (the generator needs ``preview_steps``); later units are not screened;
    - ``extend_candidates``: draws per later unit (default 1, Video-T1's), the verifier's best kept.

    Median pruning at each judged depth halves the live branches (ties keep more), so for U = 4 (judged at
    depths 1, 2) the cost is ``first_candidates·n + n + n/2 + n/4`` pipeline calls (rounded up per depth).
    """
    if n < 1 or num_units < 1 or first_candidates < 1 or extend_candidates < 1:
        raise ValueError(f"n, num_units, first_candidates and extend_candidates must be at least 1, got {n}, "
                         f"{num_units}, {first_candidates}, {extend_candidates}")
    judge = {math.floor(f * num_units) for f in (4 / 16, 9 / 16, 13 / 16)}
    return TreeConfig(branches=[n] + [1] * (num_units - 1),
                      candidates=[first_candidates] + [extend_candidates] * (num_units - 1),
                      judge_depths=frozenset(d for d in judge if d < num_units - 1),
                      screen=[screen] + [0] * (num_units - 1))


def tree_seed_budget(config: TreeConfig) -> int:
    """Seeds a tree with ``config`` draws at most (no pruning): a stride that keeps several trees' seeds apart."""
    live, total = 1, 0
    for branches, candidates, screen in zip(config.branches, config.candidates, config.screen, strict=True):
        live *= branches
        total += live * (screen or candidates)
    return total


# Verifiers


def _spec(context: Mapping, who: str) -> dict:
    from genmodels.data.moving_shapes import check_video_spec, parse_video_caption

    spec = context.get("spec")
    if spec is not None:
        return check_video_spec(spec)
    prompt = context.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError(f"{who} needs context['spec'] or context['prompt'] (a moving-shapes caption)")
    return parse_video_caption(prompt)


class VideoOracleVerifier(Verifier):
    """The moving-shapes oracle as a verifier: the mean of its ``object``, ``motion`` and ``identity`` booleans
    for ``context["spec"]`` (else the caption ``context["prompt"]``), so partial credit orders candidates.

    ``stage_keys``: ``stage -> keys`` counted at that Tree-of-Frames stage (``context["stage"]``); stages not
    listed count all three. Default: ``"start"`` counts ``object`` and ``identity`` (motion cannot show in the
    first unit). Clips need a side of at least 24 pixels (the oracle's limit).

    **An evaluator, not a verifier to report with** (as ``ShapesOracleVerifier``): selecting with it measures
    coverage, not a deployable search; ``is_oracle`` is True so callers mark their outputs.
    """

    name = "oracle"
    is_oracle = True

    def __init__(self, stage_keys: Mapping[str | None, Sequence[str]] | None = None):
        super().__init__()
        self.stage_keys = {k: tuple(v) for k, v in (DEFAULT_STAGE_KEYS if stage_keys is None else stage_keys).items()}
        for keys in self.stage_keys.values():
            if not keys or any(k not in ORACLE_KEYS for k in keys):
                raise ValueError(f"stage keys must be a non-empty subset of {ORACLE_KEYS}, got {keys}")

    def extra_repr(self) -> str:
        return f"stage_keys={self.stage_keys}"

    def _score(self, outputs, context):
        from genmodels.eval.video_oracle import score_clip

        spec = _spec(context, type(self).__name__)
        keys = self.stage_keys.get(context.get("stage"), ORACLE_KEYS)
        return [float(np.mean([score_clip(clip, spec)[k] for k in keys])) for clip in clips_to_uint8(outputs)]


def object_description(context: Mapping) -> str:
    """The objects a moving-shapes prompt names, without their motion: "a red circle and a blue square" (the
    still shapes world's wording, what the shapes CLIP was trained on). From ``context["spec"]``, else the
    parsed ``context["prompt"]``; a prompt outside the caption grammar is returned as it is."""
    from genmodels.data.moving_shapes import VideoCaptionError

    try:
        spec = _spec(context, "CLIPVideoVerifier")
    except VideoCaptionError:
        return context["prompt"]
    return " and ".join(f"{'an' if o['colour'][0] in 'aeiou' else 'a'} {o['colour']} {o['shape']}"
                        for o in spec["objects"])


def pixel_path_consistency(clip: np.ndarray) -> float:
    """A pixel-level motion heuristic in (−∞, 0], 0 = perfectly consistent: minus the sum of

    - the mean acceleration of the bright-pixel centroid, ``|c[t+1] − 2 c[t] + c[t−1]|`` in units of the side
      (0 for objects sliding at constant speed; their joint centroid then moves linearly too);
    - the mean relative change of the bright-pixel area between consecutive frames (objects keep their size;
      one that vanishes, grows or splits changes it);
    - the fraction of frames without any bright pixel.

    Bright = brightest channel ≥ ``BRIGHT_THRESHOLD`` (black background). Blind to direction and to which
    object is which; a bounce (second half of a world clip) costs one acceleration spike. Frames with no bright
    pixel count in the last term only; the path terms use runs of consecutive frames that have them.
    """
    bright = clip.max(axis=-1) >= BRIGHT_THRESHOLD  # [F, H, W]
    area = bright.sum(axis=(1, 2)).astype(np.float64)
    side = float(max(clip.shape[1:3]))
    present = area > 0
    ys, xs = np.mgrid[: clip.shape[1], : clip.shape[2]]
    centre = np.stack([(bright * xs).sum((1, 2)), (bright * ys).sum((1, 2))], -1) / np.maximum(area, 1)[:, None]
    triples = present[:-2] & present[1:-1] & present[2:]
    pairs = present[:-1] & present[1:]
    second = np.linalg.norm(np.diff(centre / side, n=2, axis=0), axis=-1)  # [F − 2]
    acceleration = second[triples].mean() if triples.any() else 0.0
    change = np.abs(np.diff(area)) / np.maximum(np.maximum(area[1:], area[:-1]), 1)  # [F − 1]
    return -float(acceleration + (change[pairs].mean() if pairs.any() else 0.0) + (1 - present.mean()))


# A moving object's expected speed as a fraction of the side per frame: the middle of the world's 1-2 px at 32
# (2-4 px at 64); the direction term judges displacement against it.
EXPECTED_SPEED = 1.5 / 32
# The direction term's weight in the "clip-video-direction" verifier of the app and the CLI (BENCHMARKS.md, "Video:
# a direction-aware verifier": best-of-N selected alike at 0.25, 0.5 and 1, worse at 0.1).
DIRECTION_WEIGHT = 0.25
# A group's worst direction penalty (displacement errors are in units of the expected displacement).
MAX_DIRECTION_PENALTY = 2.0


def _nearest_palette(clip: np.ndarray) -> np.ndarray:
    """Per pixel, the index (into the shapes world's ``COLOURS``) of its nearest palette colour, ``[F, H, W]``."""
    from genmodels.data.shapes import COLOURS

    palette = np.array(list(COLOURS.values()), dtype=np.float64)  # [C, 3]
    d = ((clip[..., None, :].astype(np.float64) - palette) ** 2).sum(-1)  # [F, H, W, C]
    return d.argmin(-1)


def direction_agreement(clip: np.ndarray, objects: Sequence[Mapping], num_frames: int | None = None) -> float:
    """How well the clip's pixels move as the prompt says, in [−2, 0], 0 = as stated; blind to shapes.

    ``objects``: the prompt's ``{"colour", "motion"}`` (a moving-shapes spec's objects). When their colours differ,
    each object is the clip's bright pixels whose nearest palette colour is its own; otherwise all bright pixels
    together are one group, expected to move by the mean of the objects' directions. Per group, over the world's
    no-bounce window (frames ``0 .. num_frames // 2``, as far as the clip goes), the least-squares displacement
    of the group's centroid (frames without its pixels left out) is compared with the expected one (the stated
    unit direction × ``EXPECTED_SPEED`` × the window; zero for "still"); the penalty is the distance between
    the two in units of a full expected displacement, at most ``MAX_DIRECTION_PENALTY`` (also a group seen in
    fewer than 2 frames of the window). The score is minus the mean penalty: still where motion was asked costs
    1, the opposite direction 2, the right direction at 1 or 2 px per frame (32 px) about 0.33.

    Reads the prompt's direction words and pixels only (no shape detection, no tracking); 0 when the clip is
    too short to show motion (fewer than 2 frames). Bright = brightest channel ≥ ``BRIGHT_THRESHOLD``.
    """
    from genmodels.data.moving_shapes import DIRECTIONS, free_steps
    from genmodels.data.shapes import COLOURS

    window = min(len(clip) - 1, free_steps(int(num_frames or len(clip))))
    if window < 1 or not objects:
        return 0.0
    part = clip[: window + 1]
    side = float(max(clip.shape[1:3]))
    bright = part.max(axis=-1) >= BRIGHT_THRESHOLD  # [W + 1, H, W]
    colours = [o["colour"] for o in objects]
    units = [np.array(DIRECTIONS[o["motion"]], dtype=np.float64) for o in objects]
    if len(set(colours)) == len(colours):
        nearest = _nearest_palette(part)
        names = list(COLOURS)
        groups = [(bright & (nearest == names.index(c)), u) for c, u in zip(colours, units, strict=True)]
    else:
        groups = [(bright, np.mean(units, axis=0))]
    scale = EXPECTED_SPEED * window  # a full expected displacement, as a fraction of the side
    ys, xs = np.mgrid[: clip.shape[1], : clip.shape[2]]
    penalties = []
    for mask, unit in groups:
        area = mask.sum(axis=(1, 2))
        seen = np.flatnonzero(area > 0)
        if len(seen) < 2:
            penalties.append(MAX_DIRECTION_PENALTY)
            continue
        m = mask[seen]
        centre = np.stack([(m * xs).sum((1, 2)), (m * ys).sum((1, 2))], -1) / area[seen, None] / side  # [n, 2]
        t = seen.astype(np.float64)
        slope = ((t - t.mean())[:, None] * (centre - centre.mean(0))).sum(0) / ((t - t.mean()) ** 2).sum()
        error = np.linalg.norm(slope * window - unit * scale) / scale
        penalties.append(min(float(error), MAX_DIRECTION_PENALTY))
    return -float(np.mean(penalties))


class CLIPVideoVerifier(Verifier):
    """A video verifier from the image CLIP (not the evaluator), for headline numbers:

        score = mean_t cos(frame_t, text) + temporal_weight · mean_t cos(frame_t, frame_t+1)
                + path_weight · pixel_path_consistency(clip) + direction_weight · direction_agreement(clip)

    ``text`` is the prompt's objects without their motion (``object_description``: the shapes CLIP saw still
    images and captions without motion words); the cosines are between L2-normalised CLIP embeddings; the
    temporal term penalises flicker and objects that change colour or shape between frames; the pixel term
    (``pixel_path_consistency``) penalises jumps, vanishing and resizing. Defaults 0.5 and 0.5, from
    ``assets/clip-shapes`` on 20 ground-truth evaluation clips (8 frames, 32 px): clip 0.70 ± 0.04, temporal
    0.96 ± 0.03, path −0.004; the second half recoloured: clip 0.45, temporal 0.89; frames 3-5 blanked: clip
    0.50, temporal 0.75, path −0.38; ±4 px jitter per frame: path −0.22; another prompt's clip: clip −0.07. With
    these weights the true clip outscored each such corruption of itself in 20 of 20 cases, and its frames in
    shuffled order in 16 of 20 (the other 4 are still objects, where the order changes nothing); weights 0.25
    or 1 ranked alike.

    **The first three terms cannot see the direction of motion**: a still clip scores at least as well as a
    moving one on both consistency terms. ``direction_weight`` (default 0: off) adds ``direction_agreement``: the
    stated direction words against the displacement of the named colours' pixels over the no-bounce window (on
    the 60 ground-truth evaluation clips: −0.27 for the clips, −0.80 frozen on their first frame, −1.18 played
    backwards; the true clip ranks above the frozen one in all 53 with motion and ties in the 7 still ones).
    It reads the prompt's motion words, so it needs a moving-shapes caption (0 for any other prompt), and it is
    a pixel heuristic of its own, not the oracle's shape tracker, though both look at where the objects go.

    Stages (``context["stage"]``, Tree-of-Frames): ``"start"`` scores the first ``start_frames`` frames (default
    all frames given, i.e. the first unit) on the CLIP and temporal terms only; ``"motion"``, ``"end"``,
    ``"final"`` and no stage score the whole clip so far with all four terms (the direction term over the frames
    of the window ``0 .. num_frames // 2`` made so far; ``num_frames`` from ``context["num_frames"]``, default the
    clip's own length).
    """

    name = "clip-video"

    def __init__(self, clip: CLIPScoreVerifier, *, temporal_weight: float = 0.5, path_weight: float = 0.5,
                 direction_weight: float = 0.0, start_frames: int | None = None):
        super().__init__()
        self.clip = clip
        self.temporal_weight, self.path_weight = float(temporal_weight), float(path_weight)
        self.direction_weight = float(direction_weight)
        if start_frames is not None and start_frames < 1:
            raise ValueError(f"start_frames must be at least 1 (or None: all), got {start_frames}")
        self.start_frames = start_frames

    @classmethod
    def from_folder(cls, path: str | Path, *, device: str = "cpu", **kwargs) -> CLIPVideoVerifier:
        """Over ``CLIPScoreVerifier.from_folder(path)`` (an open_clip folder such as ``assets/clip-shapes``)."""
        return cls(CLIPScoreVerifier.from_folder(path, device=device), **kwargs)

    def extra_repr(self) -> str:
        return (f"temporal_weight={self.temporal_weight:g}, path_weight={self.path_weight:g}, "
                f"direction_weight={self.direction_weight:g}, start_frames={self.start_frames}")

    def terms(self, outputs: Sequence[Any], context: Mapping) -> dict[str, np.ndarray]:
        """The four terms ``{"clip", "temporal", "path", "direction"}``, ``[N]`` each, for ``context``'s stage (the
        path and direction terms are 0 at ``"start"``, the temporal term 0 for one-frame clips, the direction term
        0 for a prompt outside the moving-shapes captions). All four whatever the weights, so saved terms can be
        re-weighted."""
        clips = clips_to_uint8(outputs)
        start = context.get("stage") == "start"
        if start and self.start_frames is not None:
            clips = [c[: self.start_frames] for c in clips]
        lengths = [len(c) for c in clips]
        emb = self.clip.embed_images(np.concatenate(clips))  # [ΣF, D], one batched pass over all frames
        text = self.clip.embed_text(object_description(context))
        bounds = np.cumsum([0, *lengths])
        per_clip = [emb[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return {
            "clip": np.array([(e @ text).mean() for e in per_clip]),
            "temporal": np.array([(e[1:] * e[:-1]).sum(-1).mean() if len(e) > 1 else 0.0 for e in per_clip]),
            "path": np.zeros(len(clips)) if start else np.array([pixel_path_consistency(c) for c in clips]),
            "direction": np.zeros(len(clips)) if start else self._direction(clips, context),
        }

    @staticmethod
    def _direction(clips: list[np.ndarray], context: Mapping) -> np.ndarray:
        from genmodels.data.moving_shapes import VideoCaptionError

        try:
            objects = _spec(context, "CLIPVideoVerifier")["objects"]
        except VideoCaptionError:
            return np.zeros(len(clips))
        return np.array([direction_agreement(c, objects, context.get("num_frames")) for c in clips])

    def combine(self, terms: Mapping[str, np.ndarray]) -> np.ndarray:
        """The score from ``terms``' output (the weighted sum in the class docstring)."""
        return (terms["clip"] + self.temporal_weight * terms["temporal"] + self.path_weight * terms["path"]
                + self.direction_weight * terms["direction"])

    def _score(self, outputs, context):
        return self.combine(self.terms(outputs, context))


__all__ = [
    "CLIPVideoVerifier",
    "VideoChunkGenerator",
    "VideoOracleVerifier",
    "clips_to_uint8",
    "direction_agreement",
    "object_description",
    "pixel_path_consistency",
    "text_to_video_generate_fn",
    "tree_seed_budget",
    "video_tree_config",
]
