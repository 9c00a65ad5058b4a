"""Verifiers: score a batch of candidates (higher = better) or compare two.

One interface, ``Verifier.score(outputs, context) -> [N] float64`` and ``Verifier.compare(a, b, context) -> int``
(> 0: ``a`` is better, < 0: ``b``, 0: tie; by default the sign of the score difference). ``context`` is a dict
of what the candidates were made for; the keys a verifier reads are in its docstring:

- ``"prompt"``: the text prompt (images);
- ``"spec"``: a shapes-world spec dict (the oracle; it parses ``"prompt"`` when absent);
- ``"mask"``: ``[64, W]`` bool, True = generated (piano rolls);
- ``"key"``: ``(tonic pitch class, "major" | "minor")`` (piano rolls, optional);
- ``"stage"``: ``"start" | "motion" | "end" | "final"`` during a Tree-of-Frames search (``StagedVerifier``).

Outputs: images are uint8 ``[H, W, 3]`` arrays or PIL images (a list, or an ``[N, H, W, 3]`` array); piano rolls are
``[2, 64, W]`` arrays with values in [0, 1]. ``Verifier.evaluations`` counts the candidates scored, a cost kept
apart from the generator's NFE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from genmodels.eval import music_metrics
from genmodels.music.roll import STEPS_PER_BAR


class Verifier:
    """Base class: subclasses implement ``_score(outputs, context) -> [N]``; ``score`` checks and counts."""

    name = "verifier"
    #: True for an evaluator that reads the ground truth (the shapes oracle): fine for analysis and upper bounds,
    #: never the headline verifier of a search, since selecting with it is selecting with the test.
    is_oracle = False

    def __init__(self) -> None:
        self.evaluations = 0

    def _score(self, outputs: Sequence[Any], context: Mapping) -> np.ndarray:
        raise NotImplementedError

    def score(self, outputs: Sequence[Any], context: Mapping | None = None) -> np.ndarray:
        """Scores ``[N]`` float64 of ``outputs`` (N candidates) under ``context``; higher = better."""
        outputs = list(outputs)
        if not outputs:
            raise ValueError("nothing to score: outputs is empty")
        scores = np.asarray(self._score(outputs, dict(context or {})), dtype=np.float64)
        if scores.shape != (len(outputs),):
            raise ValueError(f"{type(self).__name__} returned scores of shape {scores.shape} for {len(outputs)} "
                             "outputs")
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"{type(self).__name__} returned non-finite scores")
        self.evaluations += len(outputs)
        return scores

    def compare(self, a: Any, b: Any, context: Mapping | None = None) -> int:
        """+1 when ``a`` is better, −1 when ``b`` is, 0 on a tie (default: the scores of the two)."""
        sa, sb = self.score([a, b], context)
        return int(np.sign(sa - sb))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# Images


def images_to_uint8(outputs: Sequence[Any]) -> np.ndarray:
    """Images (PIL, or uint8 ``[H, W, 3]`` arrays, or one ``[N, H, W, 3]`` array) → uint8 ``[N, H, W, 3]``."""
    arrays = [np.asarray(o.convert("RGB")) if isinstance(o, PIL.Image.Image) else np.asarray(o) for o in outputs]
    for a in arrays:
        if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [H, W, 3] (or PIL), got {a.dtype} {list(a.shape)}")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("all images of a batch must have the same size")
    return np.stack(arrays)


class CLIPScoreVerifier(Verifier):
    """CLIP score: cosine between each image's embedding and the embedding of ``context["prompt"]``, in [−1, 1].

    ``model``: anything with open_clip's ``encode_image(x [N, 3, S, S], normalize=True) -> [N, D]`` and
    ``encode_text(ids, normalize=True) -> [M, D]``; ``tokenizer(list[str]) -> ids``. Images are resized to the
    vision tower's ``image_size`` (bicubic, antialiased) when they differ, scaled to [0, 1] and normalised by
    ``mean`` / ``std`` (the shapes CLIP: 0.5 / 0.5, i.e. [−1, 1]). Text embeddings are cached per prompt.
    """

    name = "clip"

    def __init__(self, model, tokenizer, *, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), batch_size: int = 64, device: str | torch.device = "cpu"):
        super().__init__()
        self.model = model.eval() if hasattr(model, "eval") else model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = int(batch_size)
        size = getattr(getattr(model, "visual", None), "image_size", None)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size) if size else None
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_folder(cls, path: str | Path, *, device: str | torch.device = "cpu", **kwargs) -> CLIPScoreVerifier:
        """An open_clip folder (``open_clip_config.json`` with ``model_cfg`` and ``preprocess_cfg`` +
        ``open_clip_model.safetensors``, as ``training/train_clip.py`` writes), loaded with ``local-dir:``."""
        import open_clip

        path = Path(path)
        config_path = path / "open_clip_config.json"
        if not config_path.is_file():
            raise ValueError(f"{path} is not an open_clip folder (no open_clip_config.json)")
        preprocess = json.loads(config_path.read_text()).get("preprocess_cfg", {})
        model = open_clip.create_model(f"local-dir:{path}", device=device)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        kwargs.setdefault("mean", preprocess.get("mean", (0.5, 0.5, 0.5)))
        kwargs.setdefault("std", preprocess.get("std", (0.5, 0.5, 0.5)))
        return cls(model.float(), tokenizer, device=device, **kwargs)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` → normalised float ``[N, 3, S, S]``."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def embed_images(self, outputs: Sequence[Any]) -> np.ndarray:
        """L2-normalised image embeddings ``[N, D]`` float64 (also a feature fn for ``select_majority``)."""
        images = images_to_uint8(outputs)
        feats = [self.model.encode_image(self._pixels(images[i:i + self.batch_size]), normalize=True).float().cpu()
                 for i in range(0, len(images), self.batch_size)]
        return F.normalize(torch.cat(feats), dim=-1).double().numpy()

    @torch.no_grad()
    def embed_text(self, prompt: str) -> np.ndarray:
        """L2-normalised text embedding ``[D]`` float64 of one prompt."""
        if prompt not in self._text_cache:
            ids = self.tokenizer([prompt]).to(self.device)
            feat = self.model.encode_text(ids, normalize=True).float().cpu()[0]
            self._text_cache[prompt] = F.normalize(feat, dim=-1).double()
        return self._text_cache[prompt].numpy()

    def _score(self, outputs, context):
        prompt = context.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("CLIPScoreVerifier needs context['prompt'], the text the images should show")
        return self.embed_images(outputs) @ self.embed_text(prompt)


class DiffusionScoreVerifier(Verifier):
    """The generator judging its own samples (Diffusion Classifier, Li et al., ICCV 2023, on rectified flow):
    how much knowing ``context["prompt"]`` lowers the model's flow-matching error on the image,

        score(x) = mean over (t, ε) of  ‖v(x_t, t, ∅) − (ε − x)‖² − ‖v(x_t, t, prompt) − (ε − x)‖²,
        x_t = (1 − t)·x + t·ε,

    per pixel, over the noise levels ``times`` × ``draws`` noise images. The same (t, ε) pairs are used for every
    candidate (common random numbers: the comparison between candidates does not carry the noise of independent
    draws), fixed by ``seed``. A different source of judgement from CLIP: it uses the generator's own
    text-image knowledge, never the oracle.

    ``pipeline``: a :class:`~genmodels.pipelines.text_to_image.TextToImagePipeline` (any image backbone: velocity
    prediction in pixel space, images in [−1, 1]). Cost: 2 · len(times) · draws forward passes per candidate
    (the null and prompt branches share one batched call), counted in ``forward_passes``.
    """

    name = "diffusion"

    def __init__(self, pipeline, *, times: Sequence[float] = (0.3, 0.5, 0.7), draws: int = 2, seed: int = 0,
                 batch_size: int = 16):
        super().__init__()
        times = [float(t) for t in times]
        if not times or not all(0 < t < 1 for t in times):
            raise ValueError(f"times must be noise levels in (0, 1), got {times}")
        if draws < 1 or batch_size < 1:
            raise ValueError("draws and batch_size must be positive")
        self.pipeline, self.times, self.draws, self.seed = pipeline, times, int(draws), int(seed)
        self.batch_size = int(batch_size)
        self.forward_passes = 0

    def extra_repr(self) -> str:
        return f"times={self.times}, draws={self.draws}"

    @torch.no_grad()
    def _score(self, outputs, context):
        prompt = context.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("DiffusionScoreVerifier needs context['prompt'], the text the images should show")
        images = images_to_uint8(outputs)
        pipe = self.pipeline
        transformer = pipe.transformer
        device, dtype = pipe._execution_device, transformer.dtype
        x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        transformer.check_input_size(*x0.shape[-2:])
        gen = torch.Generator().manual_seed(self.seed)
        pairs = [(t, torch.randn(x0.shape[1:], generator=gen)) for t in self.times for _ in range(self.draws)]
        text: dict[int, tuple] = {}  # batch size -> the text of [null × n; prompt × n], encoded once
        gain = torch.zeros(len(x0), dtype=torch.float64)
        for lo in range(0, len(x0), self.batch_size):
            x = x0[lo:lo + self.batch_size]
            n = len(x)
            if n not in text:
                text[n] = pipe.prepare_text([prompt] * n, True, device, dtype)
            states, pooled = text[n]
            for t, eps in pairs:
                eps = eps.to(device).expand_as(x)
                xt = (1 - t) * x + t * eps
                v = transformer(torch.cat([xt, xt]).to(dtype), torch.full((2 * n,), t, device=device),
                                pooled_text=pooled, context_states=states).float()
                target = eps - x
                err = (v - torch.cat([target, target])).pow(2).flatten(1).mean(1).double().cpu()
                gain[lo:lo + n] += err[:n] - err[n:]
                self.forward_passes += 2 * n
        return (gain / len(pairs)).numpy()


class ShapesOracleVerifier(Verifier):
    """1.0 when the shapes oracle says the image shows ``context["spec"]`` (or the caption ``context["prompt"]``),
    else 0.0.

    **An evaluator, not a verifier to report with.** It reads the ground-truth checker that the evaluation scores
    with, so a search selecting with it measures coverage (pass@k: does any candidate pass), not what a deployable
    search achieves. Use it for pass@k / upper-bound curves; headline numbers need ``CLIPScoreVerifier`` or another
    verifier that does not see the test (``is_oracle`` is True so callers can mark their outputs).
    """

    name = "oracle"
    is_oracle = True

    def _score(self, outputs, context):
        from genmodels.eval.shapes_oracle import evaluate

        spec = context.get("spec") or context.get("prompt")
        if spec is None:
            raise ValueError("ShapesOracleVerifier needs context['spec'] or context['prompt'] (a shapes caption)")
        images = images_to_uint8(outputs)
        return np.asarray(evaluate(list(images), [spec] * len(images))["correct"], dtype=np.float64)


class AgreementVerifier(Verifier):
    """Self-consistency: each candidate's mean cosine similarity to the *other* candidates of the batch, under
    ``feature_fn(outputs) -> [N, D]`` (e.g. ``CLIPScoreVerifier.embed_images`` or ``pixel_features``). A batch of
    one scores 0. Scores are relative to the batch: meaningful for selection within it only."""

    name = "agreement"

    def __init__(self, feature_fn: Callable[[Sequence[Any]], np.ndarray]):
        super().__init__()
        self.feature_fn = feature_fn

    def _score(self, outputs, context):
        from genmodels.search.selectors import agreement_scores

        return agreement_scores(self.feature_fn(outputs))


# Piano rolls


def _mask(context: Mapping, roll: np.ndarray) -> np.ndarray:
    mask = context.get("mask")
    if mask is None:
        raise ValueError("piano-roll verifiers need context['mask'] ([64, W] bool, True = generated)")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != roll.shape[1:]:
        raise ValueError(f"context['mask'] is {list(mask.shape)}, the rolls are {list(roll.shape)}")
    return mask


class BusynessVerifier(Verifier):
    """Closeness of the note density inside the mask to a target: ``−|onsets in mask / bars in mask − target|``
    (notes per bar; bars in mask = masked columns / 16). ``target=None`` scores the raw onset count instead
    (Pictures of MIDI's busiest-first). Onsets are counted with ``music_metrics.notes_in_mask``."""

    name = "busyness"

    def __init__(self, target_notes_per_bar: float | None = 8.0):
        super().__init__()
        self.target = target_notes_per_bar

    def extra_repr(self) -> str:
        return f"target_notes_per_bar={self.target}"

    def _score(self, outputs, context):
        scores = []
        for roll in outputs:
            roll = np.asarray(roll, dtype=np.float32)
            mask = _mask(context, roll)
            notes = music_metrics.notes_in_mask(roll, mask)
            if self.target is None:
                scores.append(float(notes))
            else:
                bars = max(int(mask.any(0).sum()), 1) / STEPS_PER_BAR
                scores.append(-abs(notes / bars - self.target))
        return scores


class InKeyVerifier(Verifier):
    """Fraction of onsets in the mask whose pitch class lies in the key (``music_metrics.in_key_ratio``; 0 with
    no onset). The key: the one given, else ``context["key"]``, else estimated from the notes *outside* the mask
    (so a fill cannot pick its own key), else from the whole roll when the rest is silent."""

    name = "in_key"

    def __init__(self, key: tuple[int, str] | None = None):
        super().__init__()
        self.key = key

    def _score(self, outputs, context):
        scores = []
        for roll in outputs:
            roll = np.asarray(roll, dtype=np.float32)
            mask = _mask(context, roll)
            key = self.key or context.get("key")
            if key is None:
                key = music_metrics.estimate_key(np.where(mask[None], 0.0, roll).astype(np.float32)) \
                    or music_metrics.estimate_key(roll)
            scores.append(music_metrics.in_key_ratio(roll, mask, key=key) if key is not None else 0.0)
        return scores


class OnsetGridVerifier(Verifier):
    """Fraction of onsets in the mask on the 8th-note grid (``music_metrics.onset_grid_alignment``; 0 with no
    onset)."""

    name = "onset_grid"

    def _score(self, outputs, context):
        return [music_metrics.onset_grid_alignment(np.asarray(r, np.float32), _mask(context, np.asarray(r)))
                for r in outputs]


# Combinations


def normalise_scores(scores: np.ndarray, method: str) -> np.ndarray:
    """Per-batch normalisation of ``[N]`` scores. ``"rank"``: average ranks (ties share their mean rank) mapped to
    [0, 1], worst 0, best 1 (0.5 for a batch of one or all tied); ``"zscore"``: ``(s − mean) / std`` (0 when the
    std is 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    if method == "rank":
        if len(scores) < 2 or np.ptp(scores) == 0:
            return np.full(len(scores), 0.5)
        return (rankdata(scores, method="average") - 1) / (len(scores) - 1)
    if method == "zscore":
        std = scores.std()
        return (scores - scores.mean()) / std if std > 0 else np.zeros(len(scores))
    raise ValueError(f"unknown normalisation {method!r}; expected 'rank' or 'zscore'")


class EnsembleVerifier(Verifier):
    """Weighted sum of several verifiers' scores after normalising each over the batch (``normalise_scores``:
    ``"rank"``, the default, robust to scale and outliers; or ``"zscore"``). Scores are therefore relative to the
    candidates scored together: comparable within one call only (``compare`` becomes a weighted vote)."""

    name = "ensemble"

    def __init__(self, verifiers: Sequence[Verifier], weights: Sequence[float] | None = None,
                 normalise: str = "rank"):
        super().__init__()
        self.verifiers = list(verifiers)
        if not self.verifiers:
            raise ValueError("an ensemble needs at least one verifier")
        self.weights = np.ones(len(self.verifiers)) if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (len(self.verifiers),) or not np.isfinite(self.weights).all():
            raise ValueError(f"need one finite weight per verifier ({len(self.verifiers)}), got {weights}")
        normalise_scores(np.zeros(1), normalise)  # validates the method name
        self.normalise = normalise
        self.is_oracle = any(v.is_oracle for v in self.verifiers)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{v.name}×{w:g}" for v, w in zip(self.verifiers, self.weights))
        return f"{parts}, normalise={self.normalise!r}"

    def _score(self, outputs, context):
        total = np.zeros(len(outputs))
        for verifier, weight in zip(self.verifiers, self.weights):
            total += weight * normalise_scores(verifier.score(outputs, context), self.normalise)
        return total


class StagedVerifier(Verifier):
    """Stage-specific criteria: dispatches on ``context["stage"]`` to ``verifiers[stage]``, else ``default``."""

    name = "staged"

    def __init__(self, verifiers: Mapping[str, Verifier], default: Verifier | None = None):
        super().__init__()
        self.verifiers = dict(verifiers)
        self.default = default
        self.is_oracle = any(v.is_oracle for v in [*self.verifiers.values(), default] if v is not None)

    def _score(self, outputs, context):
        verifier = self.verifiers.get(context.get("stage"), self.default)
        if verifier is None:
            raise ValueError(f"no verifier for stage {context.get('stage')!r} and no default")
        return verifier.score(outputs, context)
