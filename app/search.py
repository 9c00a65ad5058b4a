"""Test-time search in the app's tabs: N candidates from seeds S, S+1, …, S+N−1, scored by a verifier, one kept.

Shared by the Image, Piano roll and Video tabs (``genmodels.search`` does the work):

- ``check_search``: the options a request names (strategy, N, verifier), checked before any work; the Video tab
  also offers Tree-of-Frames (``VIDEO_STRATEGIES``);
- ``image_verifier`` / ``pianoroll_verifier`` / ``video_verifier``: the verifiers each tab offers. The CLIP behind
  the image and video ones is a model of the registry (``get("clip")``), loaded once and shared;
- ``CandidateProgress``: "candidate j of N" on the tab's progress bar, over every candidate's sampler steps;
- ``shown``: what the result shows next to the chosen output (each candidate captioned with its seed and score, the
  chosen one marked, and a line with the strategy, the NFE and the wall time); ``tree_shown`` the same for a
  Tree-of-Frames search (its final leaves); ``search_controls`` and ``candidates_display`` build those components.

Strategy "none" does not come here: the tabs keep their plain path for it, so a request without search gives the
output it always gave. The shapes oracle is the evaluator, not a verifier, and is never offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from app.errors import check_number, user_errors
from app.registry import ModelRegistry
from app.settings import Settings
from genmodels.search import (
    AgreementVerifier,
    BusynessVerifier,
    EnsembleVerifier,
    GenerateFn,
    InKeyVerifier,
    OnsetGridVerifier,
    SearchResult,
    Verifier,
)

NONE = "none"
TREE = "tree-of-frames"
STRATEGIES = {NONE: "none (one sample)", "best-of-n": "best-of-N (highest score)",
              "tournament": "tournament (knockout of pairs)"}
VIDEO_STRATEGIES = {**STRATEGIES, TREE: "Tree-of-Frames (grow N clips unit by unit, prune at the median)"}
MIN_N = 2
DEFAULT_N = 4
IMAGE_VERIFIERS = {"clip": "CLIP score of the prompt",
                   "ensemble": "CLIP score + agreement with the other candidates (ensemble)"}
PIANOROLL_VERIFIERS = {"busyness": "busyness (the percentile below, as without search)",
                       "in-key": "in key (notes in the key of the rest)",
                       "onset-grid": "onset grid (notes on the 8th-note grid)",
                       "ensemble": "ensemble of busyness, in key and onset grid"}
VIDEO_VERIFIERS = {"clip-video-direction": "CLIP score over the frames + the prompt's direction of motion",
                   "clip-video": "CLIP score of the prompt, over the clip's frames (blind to motion)"}
HELP = ("Make **N** candidates (seeds S … S+N−1, S the seed above), score each with the **verifier** and keep the "
        "best: *best-of-N* takes the highest score, a *tournament* plays knockout pairs. Costs N times the time of "
        "one; every candidate is shown with its score below the result.")


# ---------------------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class SearchOptions:
    """A request's search: ``strategy`` (a key of ``STRATEGIES``), ``n`` candidates, ``verifier`` (a key of the
    tab's verifiers)."""

    strategy: str
    n: int
    verifier: str

    @property
    def active(self) -> bool:
        return self.strategy != NONE


def check_search(strategy: Any, n: Any, verifier: Any, *, verifiers: Mapping[str, str], max_n: int, seed: int,
                 max_seed: int, strategies: Mapping[str, str] = STRATEGIES) -> SearchOptions:
    """The search options of a request; ValueError with a clear message for a strategy not in ``strategies`` or an
    unknown verifier, an N outside ``MIN_N..max_n`` (checked whatever the strategy, so a bad request is refused the
    same way every time), or a search whose last seed ``seed + n − 1`` passes ``max_seed`` (a tree's seeds are
    checked by its tab, which knows how many it may draw)."""
    if strategy not in strategies:
        raise ValueError(f"unknown search strategy {strategy!r}; choose one of: {', '.join(strategies)}")
    n = check_number("N (candidates of the search)", n, MIN_N, max_n, integer=True)
    if verifier not in verifiers:
        raise ValueError(f"unknown verifier {verifier!r}; choose one of: {', '.join(verifiers)}")
    if strategy != NONE and seed + n - 1 > max_seed:
        raise ValueError(f"a search over N = {n} candidates uses seeds {seed} to {seed + n - 1}; the seed must be at "
                         f"most {max_seed - n + 1}")
    return SearchOptions(strategy, n, verifier)


# ---------------------------------------------------------------------------------------------------------
# Verifiers


def image_verifier(registry: ModelRegistry, name: str) -> Verifier:
    """``"clip"``: the CLIP score of the prompt; ``"ensemble"``: that plus agreement with the other candidates (CLIP
    embeddings), rank-normalised, weights 1 and 0.5 (as ``lingen generate --verifier ensemble``)."""
    clip = registry.get("clip")
    if name == "clip":
        return clip
    if name == "ensemble":
        return EnsembleVerifier([clip, AgreementVerifier(clip.embed_images)], weights=[1.0, 0.5], normalise="rank")
    raise ValueError(f"unknown image verifier {name!r}")


def video_verifier(registry: ModelRegistry, name: str) -> Verifier:
    """``"clip-video"``: the CLIP score of the prompt over the clip's frames (``genmodels.search.video``);
    ``"clip-video-direction"``: that plus its direction term (``DIRECTION_WEIGHT``), which reads the prompt's
    direction words against where the named colours' pixels go."""
    from genmodels.search.video import DIRECTION_WEIGHT, CLIPVideoVerifier

    if name == "clip-video":
        return CLIPVideoVerifier(registry.get("clip"))
    if name == "clip-video-direction":
        return CLIPVideoVerifier(registry.get("clip"), direction_weight=DIRECTION_WEIGHT)
    raise ValueError(f"unknown video verifier {name!r}")


class BusynessPercentileVerifier(Verifier):
    """The piano-roll pipeline's own selection as a verifier: the candidate at ``percentile`` of the batch's notes
    in the mask (ascending, ``round(p / 100 · (N − 1))``: 100 = the busiest, 0 = the sparsest) scores 0, the others
    ``−|their notes − its notes|``. Notes are onsets in the mask (``BusynessVerifier(None)``). Relative to the batch,
    like the pipeline's choice."""

    name = "busyness"

    def __init__(self, percentile: float = 100.0):
        super().__init__()
        self.percentile = float(percentile)
        self.notes = BusynessVerifier(target_notes_per_bar=None)

    def extra_repr(self) -> str:
        return f"percentile={self.percentile:g}"

    def _score(self, outputs, context):
        notes = self.notes.score(outputs, context)
        order = np.argsort(notes, kind="stable")
        target = notes[order[int(round(self.percentile / 100 * (len(notes) - 1)))]]
        return -np.abs(notes - target)


def pianoroll_verifier(name: str, busyness: float) -> Verifier:
    """``"busyness"`` (at the tab's busyness percentile), ``"in-key"``, ``"onset-grid"``, or ``"ensemble"``: the three,
    rank-normalised, equal weights."""
    make: dict[str, Callable[[], Verifier]] = {"busyness": lambda: BusynessPercentileVerifier(busyness),
                                               "in-key": InKeyVerifier, "onset-grid": OnsetGridVerifier}
    if name == "ensemble":
        return EnsembleVerifier([build() for build in make.values()], normalise="rank")
    if name not in make:
        raise ValueError(f"unknown piano-roll verifier {name!r}")
    return make[name]()


# ---------------------------------------------------------------------------------------------------------
# Progress and results


class CandidateProgress:
    """A search's progress on ``progress`` (a ``gr.Progress``): the bar runs over the sampler steps of all ``n``
    candidates and says "candidate j of N" (or "candidates j–k of N" for a batch; ``noun``: "draft" when the
    search runs on drafts); then "scoring".

    ``wrap`` the generate fn and pass ``on_step`` as the pipeline's ``callback(step, total)``.
    """

    def __init__(self, progress: Callable[..., Any], n: int, verifier: str, noun: str = "candidate"):
        self.progress, self.n, self.verifier, self.noun = progress, int(n), verifier, noun
        self.done = 0  # candidates finished
        self.batch = 1  # candidates in the current pipeline call

    def wrap(self, generate_fn: GenerateFn) -> GenerateFn:
        def generate(seeds: list[int]) -> tuple[Sequence[Any], int]:
            self.batch = len(seeds)
            self.on_step(0, 1)
            out = generate_fn(seeds)
            self.done += len(seeds)
            if self.done >= self.n:
                self.progress(1.0, desc=f"scoring {self.n} {self.noun}s ({self.verifier})")
            return out

        return generate

    def on_step(self, step: int, total: int) -> None:
        first, last = self.done + 1, self.done + self.batch
        desc = f"{self.noun} {first} of {self.n}" if first == last else f"{self.noun}s {first}–{last} of {self.n}"
        self.progress((self.done * total + step * self.batch, self.n * total), desc=desc, unit="steps")


class TreeProgress:
    """A Tree-of-Frames search's progress on ``progress``: wraps its unit generator (``start`` / ``extend``, the
    rest passed through) so the bar runs over the units, "unit u of U: branch b" (b counting the pipeline calls
    of that unit: one per live branch), with ``on_step`` as the pipeline's ``callback(step, total)``."""

    def __init__(self, progress: Callable[..., Any], generator: Any):
        self.progress, self.generator = progress, generator
        self.unit, self.call = 0, 0  # the unit being grown (0-based) and the pipeline call within it
        self._frames: int | None = None  # the frames the branches had before this unit

    def __getattr__(self, name: str) -> Any:  # output, verifier_context, num_units, …
        return getattr(self.generator, name)

    def _enter(self, frames: int) -> None:
        if frames != self._frames:  # a new unit: every branch has the same number of frames at a depth
            self.unit += self._frames is not None
            self._frames, self.call = frames, 0
        self.call += 1
        self.on_step(0, 1)

    def start(self, n_candidates: int, seeds: list[int]):
        self._enter(0 if self.generator.primer is None else len(self.generator.primer))
        return self.generator.start(n_candidates, seeds)

    def extend(self, state: Any, n_candidates: int, seeds: list[int]):
        self._enter(len(state))
        return self.generator.extend(state, n_candidates, seeds)

    def preview(self, parent: Any | None, n_candidates: int, seeds: list[int]):
        """Drafts of a unit (a tree that screens by drafts), counted as that unit's pipeline calls."""
        primer = self.generator.primer
        self._enter(len(parent) if parent is not None else 0 if primer is None else len(primer))
        return self.generator.preview(parent, n_candidates, seeds)

    def on_step(self, step: int, total: int) -> None:
        units = self.generator.num_units
        self.progress((self.unit * total + min(step, total), units * total),
                      desc=f"Tree-of-Frames: unit {self.unit + 1} of {units}, branch {self.call}", unit="steps")


@dataclass(frozen=True)
class Shown:
    """What a search shows under the result: ``gallery``, (picture or file, caption) per candidate in seed order;
    ``line``: Markdown with the strategy, the chosen candidate, the NFE and the wall time."""

    gallery: list[tuple[Any, str]]
    line: str


def caption(seed: int, score: float, chosen: bool) -> str:
    """"seed S · score X", marked "✓ " in front when chosen (in front: a gallery cuts long captions short)."""
    return ("✓ " if chosen else "") + f"seed {seed} · score {score + 0.0:.4g}"  # + 0.0: no "-0"


def shown(result: SearchResult, options: SearchOptions, pictures: Sequence[Any], *,
          draft_steps: int | None = None) -> Shown:
    """The display of ``result``, ``pictures[i]`` standing for candidate i (an image, or a file such as a GIF).
    ``draft_steps``: the search ran on drafts of that many steps (``run_search(final_fn=…)``): the candidates
    shown are the drafts, and the line says which were drawn in full."""
    seeds, scores = result.candidates.seeds, result.scores
    gallery = [(pic, caption(s, x, i == result.index).replace("seed", "draft · seed", 1 if draft_steps else 0))
               for i, (pic, s, x) in enumerate(zip(pictures, seeds, scores))]
    how = f"{result.comparisons} comparisons" if options.strategy == "tournament" else "the highest score"
    per = result.nfe_per_candidate
    what = f"{len(seeds)} candidates"
    if draft_steps:
        what = f"{len(seeds)} drafts of {draft_steps} step{'s' if draft_steps > 1 else ''}"
    line = f"**{options.strategy}** over {what} scored by **{options.verifier}** ({how})"
    if draft_steps:
        full = result.final_seeds or [result.seed]
        if len(full) == 1:
            best = "winning" if options.strategy == "tournament" else "best"
            line += f"; the {best} draft (seed {result.seed}) drawn in full"
        else:
            line += (f"; the best {len(full)} drafts (seeds {', '.join(map(str, full))}) drawn in full, the "
                     f"verifier's best kept: seed {result.seed}")
        line += (f" · {result.nfe} network evaluations (nfe) in all, {int(per[0])} per draft and "
                 f"{result.final_nfe // len(full)} per full draw")
    else:
        line += (f": candidate {result.index + 1} (seed {result.seed}) chosen · {result.nfe} network evaluations "
                 f"(nfe) in all, {int(per[0])} per candidate")
    return Shown(gallery, f"{line} · {result.seconds:.2f} s wall time (sampling and scoring)")


def tree_shown(result: SearchResult, options: SearchOptions, pictures: Sequence[Any], *, units: int,
               frames_per_unit: int, clip_nfe: float, clip_steps: int, grown: bool,
               drafts: tuple[int, int, int] | None = None) -> Shown:
    """The display of a Tree-of-Frames ``result``: ``pictures[i]`` stands for final leaf i (captioned "leaf i ·
    score X", the chosen one marked); the line gives the roots, units, live branches per unit, the denoiser
    evaluations and their cost in whole clips (``clip_nfe`` / ``clip_steps``; ``grown``: units denoised only the
    frames their branch had). ``drafts`` (screen, draft steps, draws per continuation): each root's first unit
    was chosen among that many drafts and every continuation drawn that many times."""
    tree = result.tree
    gallery = [(pic, ("✓ " if i == result.index else "") + f"leaf {i + 1} · score {x + 0.0:.4g}")
               for i, (pic, x) in enumerate(zip(pictures, result.scores, strict=True))]
    live = " → ".join(str(k) for k in tree.live_per_depth)
    screened = ""
    if drafts is not None:
        screen, steps, extend = drafts
        screened = (f", each root's first unit the best of {screen} drafts of {steps} step{'s' if steps > 1 else ''}"
                    f", each continuation the best of {extend} draws")
    line = (f"**{TREE}** from {options.n} roots{screened}, {units} unit{'s' if units > 1 else ''} of {frames_per_unit} "
            f"frame{'s' if frames_per_unit > 1 else ''}, scored by **{options.verifier}**: branches alive after each "
            f"unit {live}; leaf {result.index + 1} of {len(tree.leaves)} chosen · {result.nfe} network evaluations "
            f"(nfe){' on growing clips' if grown else ''}, the compute of {clip_nfe / clip_steps:.1f} whole clips "
            f"({clip_nfe:.0f} clip nfe) · {tree.verifier_evaluations} verifier scores · {result.seconds:.2f} s wall "
            "time (sampling and scoring)")
    return Shown(gallery, line)


@user_errors
def show_candidates(value: Shown | None) -> tuple[list[tuple[Any, str]], str]:
    """The candidates gallery and the search line of the last result (empty for a result without search)."""
    return ([], "") if value is None else (value.gallery, value.line)


def display_visibility(value: Shown | None) -> Any:
    return gr.Column(visible=value is not None)


# ---------------------------------------------------------------------------------------------------------
# Layout


def search_controls(settings: Settings, verifiers: Mapping[str, str], prefix: str, note: str = "",
                    strategies: Mapping[str, str] = STRATEGIES, drafts: str | None = None) -> tuple[Any, ...]:
    """The "Test-time search" accordion (closed, strategy none), its help followed by ``note``: returns its
    (strategy, N, verifier) components, and a "search on drafts" checkbox (off) labelled ``drafts`` when given."""
    with gr.Accordion("Test-time search", open=False, elem_id=f"{prefix}-search"):
        gr.Markdown(f"{HELP} {note}".strip())
        strategy = gr.Radio([(label, key) for key, label in strategies.items()], value=NONE, label="Strategy",
                            elem_id=f"{prefix}-search-strategy")
        with gr.Row():
            n = gr.Slider(MIN_N, settings.max_search_n, value=min(DEFAULT_N, settings.max_search_n), step=1,
                          label="N (candidates to search)", elem_id=f"{prefix}-search-n")
            verifier = gr.Dropdown([(label, key) for key, label in verifiers.items()], value=next(iter(verifiers)),
                                   label="Verifier", elem_id=f"{prefix}-search-verifier")
        if drafts is None:
            return strategy, n, verifier
        on_drafts = gr.Checkbox(False, label=drafts, elem_id=f"{prefix}-search-drafts")
    return strategy, n, verifier, on_drafts


def candidates_display(prefix: str) -> tuple[Any, Any, Any]:
    """The search's candidates under a result, hidden until a search has run: returns (column, gallery, line)."""
    with gr.Column(visible=False, elem_id=f"{prefix}-candidates-box") as column:
        line = gr.Markdown(elem_id=f"{prefix}-search-line")
        gallery = gr.Gallery(label="Candidates (seed · verifier score; the chosen one is marked ✓)", format="png",
                             columns=4, height="auto", object_fit="contain", interactive=False,
                             elem_id=f"{prefix}-candidates")
    return column, gallery, line


def wire_display(event: Any, state: Any, column: Any, gallery: Any, line: Any, api_name: str | None) -> None:
    """After ``event`` succeeds: the candidates of ``state`` into ``gallery`` and ``line`` (an API endpoint named
    ``api_name``, or private when None), and the display shown only after a search."""
    api = {"api_name": api_name} if api_name else {"api_visibility": "private"}
    event.success(show_candidates, state, [gallery, line], concurrency_limit=None, **api)
    event.success(display_visibility, state, column, concurrency_limit=None, api_visibility="private")
