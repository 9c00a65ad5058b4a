"""Tree-of-Frames (Video-T1) for anything generated unit by unit: frames, bars of a piano roll, image strips.

The generator is a ``UnitGenerator``: ``start(n, seeds)`` draws n candidate first units, ``extend(state, n, seeds)``
draws n candidate continuations of a state, both returning a ``UnitBatch`` (the new states and the denoiser
evaluations they cost, summed over the n candidates), and ``output(state)`` gives what a verifier scores.

The search, with per-depth lists (depth d = the d-th unit, 0-based, U = number of units):

1. **Branching.** ``branches[0]`` roots; at depth d > 0 every live branch gets ``branches[d]`` children.
2. **Candidates per unit.** Each root / child is the best of ``candidates[d]`` draws under the verifier (no verifier
   call when there is one draw). With ``screen[d] = S > 0`` the unit is first drawn S times as cheap **previews**
   (``generator.preview``: the same seeds at a few denoising steps), the verifier ranks them, and only the
   ``candidates[d]`` best seeds are drawn in full; the previews' NFE counts in the unit's cost. A deterministic
   sampler from the same noise lands near its full-step result, so a preview screens a seed for a fraction of a
   draw.
3. **Judging.** At each depth in ``judge_depths``, after the depth's units are made, the live branches are scored
   and those scoring at or above the median survive (ties keep more; if none did, the best one).
4. **Stages.** The verifier's context carries ``stage``: ``"start"`` at depth 0, ``"end"`` at depths ≥ U − 2,
   ``"motion"`` in between (Video-T1's three sub-prompts), ``"final"`` for step 5; and ``depth``.
5. **Leaves.** Best-of over the surviving leaves.

Seeds are ``seed, seed + 1, ...`` handed out in generation order, so with every list entry 1 the tree is one plain
unit-by-unit generation with seeds seed, seed + 1, ..., seed + U − 1. Video-T1's default (16 units, branches
8, 1, 1, ..., candidates 5, 2, 1, ..., judging 4, 9, 13, 60 calls per unit) costs 6,600 unit-NFE against 960 for
one plain generation (tests/search/test_tree_of_frames.py reproduces the arithmetic).

``PianoRollBarGenerator`` adapts ``PianoRollInpaintPipeline``: bar by bar, each unit inpainted to the right of
what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from genmodels.music.roll import ROLL_PITCHES, STEPS_PER_BAR, check_roll
from genmodels.search.sampling import generators
from genmodels.search.selectors import select_argmax, select_top_k
from genmodels.search.verifiers import Verifier


@dataclass
class UnitBatch:
    """``states``: the n new states (a state holds everything generated so far on its branch); ``nfe``: denoiser
    evaluations summed over the n candidates (a batched call over n samples costs n × its calls)."""

    states: list[Any]
    nfe: int


@runtime_checkable
class UnitGenerator(Protocol):
    """What Tree-of-Frames needs from a generator. ``verifier_context(depth)``, optional, adds keys to the
    verifier's context at that depth (e.g. the mask of what has been generated)."""

    def start(self, n_candidates: int, seeds: list[int]) -> UnitBatch: ...

    def extend(self, state: Any, n_candidates: int, seeds: list[int]) -> UnitBatch: ...

    def output(self, state: Any) -> Any: ...


@runtime_checkable
class PreviewingUnitGenerator(UnitGenerator, Protocol):
    """A ``UnitGenerator`` that can also draw cheap previews of a unit (``TreeConfig.screen``): ``preview(parent,
    n, seeds)`` (``parent`` None for a first unit) returns what ``start`` / ``extend`` would with the same seeds,
    approximately, for less NFE."""

    def preview(self, parent: Any | None, n_candidates: int, seeds: list[int]) -> UnitBatch: ...


def default_stage(depth: int, num_units: int) -> str:
    """Video-T1's criteria schedule: ``"start"`` (scene) at depth 0, ``"end"`` (ending state) from depth U − 2 on,
    ``"motion"`` (action) in between."""
    if depth == 0:
        return "start"
    return "end" if depth >= num_units - 2 else "motion"


def motion_from_start_stage(depth: int, num_units: int) -> str:
    """:func:`default_stage` without ``"start"``: depth 0 is judged as ``"motion"`` (for first units long enough to
    show motion, so the verifier's motion terms can act from the first choice and the first pruning on)."""
    stage = default_stage(depth, num_units)
    return "motion" if stage == "start" else stage


def prune_at_median(scores: Sequence[float]) -> np.ndarray:
    """Indices (ascending) of the scores at or above their median: ties keep more; if none qualifies, the best."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.flatnonzero(scores >= np.median(scores))
    return keep if keep.size else np.array([int(np.argmax(scores))])


@dataclass
class TreeConfig:
    """Per-depth lists, one entry per unit (``len`` = U): ``branches`` (roots at depth 0, then children per live
    branch), ``candidates`` (draws per new unit, best kept), ``judge_depths`` (median pruning after these depths),
    ``screen`` (previews per new unit, the ``candidates`` best drawn in full; 0 = none; default all 0)."""

    branches: list[int]
    candidates: list[int]
    judge_depths: frozenset[int] = field(default_factory=frozenset)
    screen: list[int] | None = None

    def __post_init__(self):
        self.branches, self.candidates = [int(b) for b in self.branches], [int(c) for c in self.candidates]
        self.judge_depths = frozenset(int(d) for d in self.judge_depths)
        if not self.branches or len(self.branches) != len(self.candidates):
            raise ValueError(f"branches and candidates need one entry per unit, got {len(self.branches)} and "
                             f"{len(self.candidates)}")
        if min(self.branches) < 1 or min(self.candidates) < 1:
            raise ValueError("every branches / candidates entry must be at least 1")
        self.screen = [0] * len(self.branches) if self.screen is None else [int(s) for s in self.screen]
        if len(self.screen) != len(self.branches):
            raise ValueError(f"screen needs one entry per unit, got {len(self.screen)} for {len(self.branches)} units")
        bad = [d for d, (s, c) in enumerate(zip(self.screen, self.candidates)) if s and s < c]
        if min(self.screen) < 0 or bad:
            raise ValueError(f"every screen entry must be 0 (no previews) or at least that depth's candidates, got "
                             f"screen {self.screen} for candidates {self.candidates}")
        if any(not 0 <= d < len(self.branches) for d in self.judge_depths):
            raise ValueError(f"judge_depths must lie in 0..{len(self.branches) - 1}, got {sorted(self.judge_depths)}")

    @property
    def num_units(self) -> int:
        return len(self.branches)

    @classmethod
    def video_t1(cls, num_units: int = 16) -> TreeConfig:
        """Video-T1's defaults scaled to ``num_units``: 8 roots, 5 then 2 then 1 candidates per unit, judging at
        depths 4, 9, 13 (those that exist)."""
        return cls(branches=[8] + [1] * (num_units - 1), candidates=([5, 2] + [1] * num_units)[:num_units],
                   judge_depths=frozenset(d for d in (4, 9, 13) if d < num_units))


@dataclass
class TreeResult:
    """``output``: the chosen leaf's output; ``best``: its index in ``leaves``; ``leaves``: final states;
    ``leaf_scores``: ``[L]`` final verifier scores; ``nfe``: total denoiser evaluations; ``nfe_per_depth``: ``[U]``;
    ``live_per_depth``: branches alive after each depth (after pruning); ``seeds_used``: how many seeds were drawn;
    ``verifier_evaluations``: candidates scored."""

    output: Any
    best: int
    leaves: list[Any]
    leaf_scores: np.ndarray
    nfe: int
    nfe_per_depth: list[int]
    live_per_depth: list[int]
    seeds_used: int
    verifier_evaluations: int


def tree_of_frames(generator: UnitGenerator, verifier: Verifier, config: TreeConfig, *,
                   context: Mapping | None = None, seed: int = 0,
                   stage_fn: Callable[[int, int], str] = default_stage) -> TreeResult:
    """Run the Tree-of-Frames search (module docstring) and return the best leaf with the cost accounting."""
    base = dict(context or {})
    units = config.num_units
    next_seed = int(seed)
    nfe_per_depth, live_per_depth = [], []
    evaluations_before = verifier.evaluations

    def draw_seeds(n: int) -> list[int]:
        nonlocal next_seed
        next_seed += n
        return list(range(next_seed - n, next_seed))

    def ctx(depth: int, stage: str) -> dict:
        extra = generator.verifier_context(depth) if hasattr(generator, "verifier_context") else {}
        return {**base, **extra, "stage": stage, "depth": depth}

    def best_of(batch: UnitBatch, context: dict) -> Any:
        if len(batch.states) == 1:
            return batch.states[0]
        scores = verifier.score([generator.output(s) for s in batch.states], context)
        return batch.states[select_argmax(scores)]

    if any(config.screen) and not callable(getattr(generator, "preview", None)):
        raise ValueError(f"TreeConfig.screen asks for previews, which {type(generator).__name__} cannot draw "
                         f"(it has no preview method)")

    live: list[Any] = []
    for depth in range(units):
        context = ctx(depth, stage_fn(depth, units))
        n_cand, spent, grown = config.candidates[depth], 0, []
        if depth == 0:
            parents = [None] * config.branches[0]
        else:
            parents = [p for p in live for _ in range(config.branches[depth])]
        for parent in parents:
            if config.screen[depth]:  # the n_cand seeds whose previews score best (ties: the earlier seed)
                seeds = draw_seeds(config.screen[depth])
                previews = generator.preview(parent, len(seeds), seeds)
                if len(previews.states) != len(seeds):
                    raise ValueError(f"the generator returned {len(previews.states)} previews for {len(seeds)}")
                spent += int(previews.nfe)
                scores = verifier.score([generator.output(s) for s in previews.states], context)
                seeds = [seeds[i] for i in select_top_k(scores, n_cand)]
            else:
                seeds = draw_seeds(n_cand)
            batch = generator.start(n_cand, seeds) if parent is None else generator.extend(parent, n_cand, seeds)
            if len(batch.states) != n_cand:
                raise ValueError(f"the generator returned {len(batch.states)} states for {n_cand} candidates")
            spent += int(batch.nfe)
            grown.append(best_of(batch, context))
        if depth in config.judge_depths and len(grown) > 1:
            scores = verifier.score([generator.output(s) for s in grown], context)
            grown = [grown[i] for i in prune_at_median(scores)]
        live = grown
        nfe_per_depth.append(spent)
        live_per_depth.append(len(live))

    final = ctx(units - 1, "final")
    leaf_scores = verifier.score([generator.output(s) for s in live], final)
    best = select_argmax(leaf_scores)
    return TreeResult(output=generator.output(live[best]), best=best, leaves=live, leaf_scores=leaf_scores,
                      nfe=sum(nfe_per_depth), nfe_per_depth=nfe_per_depth, live_per_depth=live_per_depth,
                      seeds_used=next_seed - int(seed), verifier_evaluations=verifier.evaluations - evaluations_before)


# Piano rolls, bar by bar


@dataclass
class RollState:
    """A branch of a piano roll: ``roll`` ``[2, 64, W]`` (the primer, the units generated so far, zeros after
    column ``end``), ``end``: first column not generated yet."""

    roll: np.ndarray
    end: int


class PianoRollBarGenerator:
    """Generate a piano roll unit by unit (``bars_per_unit`` bars, 16 columns each) with a
    ``PianoRollInpaintPipeline``, each unit inpainted to the right of what exists.

    ``primer``: ``[2, 64, P]`` roll to continue (P a multiple of 16, may be 0); ``num_units``: units to generate,
    so the result is ``[2, 64, P + num_units · bars_per_unit · 16]``. Extending a state inpaints the model-window
    of columns that ends at the new unit (at most ``pipe.window`` columns, starting on a bar line) with the new
    unit's columns masked as "generate" (rows ``pitch_rows``, default all), so the model sees up to a window of
    context on the left. The n candidates of one extension are one batched ``inpaint_batch`` call with one
    generator per candidate; NFE reported = calls × n.
    """

    def __init__(self, pipe, primer: np.ndarray | None, num_units: int, *, bars_per_unit: int = 1,
                 num_inference_steps: int = 24, repaint: int = 2, pitch_rows: slice | Sequence[int] | None = None):
        self.pipe = pipe
        primer = np.zeros((2, ROLL_PITCHES, 0), np.float32) if primer is None else np.asarray(primer, np.float32)
        if primer.ndim != 3 or primer.shape[:2] != (2, ROLL_PITCHES) or primer.shape[2] % STEPS_PER_BAR:
            raise ValueError(f"primer must be [2, {ROLL_PITCHES}, P] with P a multiple of {STEPS_PER_BAR}, "
                             f"got {list(primer.shape)}")
        if primer.shape[2]:
            check_roll(primer)
        self.unit = int(bars_per_unit) * STEPS_PER_BAR
        if self.unit < STEPS_PER_BAR or self.unit > pipe.window:
            raise ValueError(f"bars_per_unit must give 16..{pipe.window} columns (the model window)")
        self.num_units = int(num_units)
        self.primer_width = primer.shape[2]
        self.width = self.primer_width + self.num_units * self.unit
        self.initial = RollState(np.concatenate([primer, np.zeros((2, ROLL_PITCHES, self.width - primer.shape[2]),
                                                                  np.float32)], axis=2), self.primer_width)
        self.rows = np.zeros(ROLL_PITCHES, bool)
        self.rows[slice(None) if pitch_rows is None else pitch_rows] = True
        self.steps, self.repaint = int(num_inference_steps), int(repaint)

    def output(self, state: RollState) -> np.ndarray:
        """The whole roll ``[2, 64, W]`` (columns after ``state.end`` still empty)."""
        return state.roll

    def generated_mask(self, end: int) -> np.ndarray:
        """``[64, W]`` bool: the generated cells (rows ``pitch_rows``) from the primer's end to column ``end``."""
        mask = np.zeros((ROLL_PITCHES, self.width), bool)
        mask[np.ix_(self.rows, np.arange(self.primer_width, end))] = True
        return mask

    def verifier_context(self, depth: int) -> dict:
        """Piano-roll verifiers judge everything generated so far: ``{"mask": generated_mask(...)}``."""
        return {"mask": self.generated_mask(self.primer_width + (depth + 1) * self.unit)}

    def start(self, n_candidates: int, seeds: list[int]) -> UnitBatch:
        return self.extend(self.initial, n_candidates, seeds)

    def extend(self, state: RollState, n_candidates: int, seeds: list[int]) -> UnitBatch:
        new_end = state.end + self.unit
        if new_end > self.width:
            raise ValueError(f"the roll is complete ({self.num_units} units); nothing left to extend")
        lo = -(-max(0, new_end - self.pipe.window) // STEPS_PER_BAR) * STEPS_PER_BAR  # rounded up to a bar line
        mask = np.zeros((ROLL_PITCHES, new_end - lo), bool)
        mask[self.rows, state.end - lo:] = True
        rolls = np.repeat(state.roll[None, :, :, lo:new_end], n_candidates, axis=0)
        masks = np.repeat(mask[None], n_candidates, axis=0)
        filled, calls = self.pipe.inpaint_batch(rolls, masks, num_inference_steps=self.steps, repaint=self.repaint,
                                                generator=generators(seeds))
        states = []
        for i in range(n_candidates):
            roll = state.roll.copy()
            roll[:, :, lo:new_end] = filled[i]
            states.append(RollState(roll, new_end))
        return UnitBatch(states=states, nfe=int(calls) * n_candidates)

