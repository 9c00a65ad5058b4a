"""Verifiers: CLIP score, the shapes oracle, piano-roll criteria, ensembles and stages."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genmodels.data.shapes import CATEGORIES, render_scene, sample_scene
from genmodels.eval import music_metrics
from genmodels.music.roll import pitch_to_row
from genmodels.search import (
    BusynessVerifier,
    CLIPScoreVerifier,
    DiffusionScoreVerifier,
    EnsembleVerifier,
    InKeyVerifier,
    OnsetGridVerifier,
    ShapesOracleVerifier,
    StagedVerifier,
    Verifier,
    normalise_scores,
)
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_image_pipeline

COLOURS = {"red": 0, "green": 1, "blue": 2}


class ColourCLIP:
    """A CLIP whose embeddings we control: an image embeds as its mean RGB, a prompt as its colour word one-hot."""

    visual = SimpleNamespace(image_size=8)

    def eval(self):
        return self

    def encode_image(self, x, normalize=True):
        assert x.shape[1:] == (3, 8, 8)  # resized to the tower's size
        return torch.nn.functional.normalize(x.mean((2, 3)) + 1, dim=-1)  # x in [-1, 1]: shift to [0, 2]

    def encode_text(self, ids, normalize=True):
        return torch.nn.functional.one_hot(ids[:, 0], 3).float()

    @staticmethod
    def tokenizer(prompts):
        return torch.tensor([[next(i for w, i in COLOURS.items() if w in p)] for p in prompts])


def flat(rgb, size=16):
    return np.broadcast_to(np.array(rgb, np.uint8), (size, size, 3)).copy()


def test_clip_score_ranks_the_matching_caption_first():
    verifier = CLIPScoreVerifier(ColourCLIP(), ColourCLIP.tokenizer)
    images = [flat((0, 0, 255)), flat((255, 0, 0)), flat((0, 200, 0))]
    red = verifier.score(images, {"prompt": "a red square"})
    assert int(np.argmax(red)) == 1 and red[1] == pytest.approx(1.0)
    # the same image scores higher under its own caption than under a wrong one
    assert verifier.score([images[1]], {"prompt": "a red square"})[0] > \
        verifier.score([images[1]], {"prompt": "a blue square"})[0]
    assert verifier.compare(images[1], images[0], {"prompt": "a red circle"}) == 1
    assert verifier.evaluations == 3 + 1 + 1 + 2


def test_clip_score_needs_a_prompt():
    with pytest.raises(ValueError, match="prompt"):
        CLIPScoreVerifier(ColourCLIP(), ColourCLIP.tokenizer).score([flat((1, 2, 3))], {})


def test_open_clip_folder_scores_are_cosines(tmp_path):
    verifier = CLIPScoreVerifier.from_folder(save_tiny_open_clip(tmp_path / "clip"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    a = verifier.score(images, {"prompt": "a red circle"})
    b = verifier.score(images[::-1], {"prompt": "a red circle"})
    assert a.shape == (3,) and np.all(np.abs(a) <= 1 + 1e-6)
    np.testing.assert_allclose(a, b[::-1], atol=1e-6)  # per image, whatever the batch order
    with torch.no_grad():
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
        img = verifier.model.encode_image(x, normalize=True)
        txt = verifier.model.encode_text(verifier.tokenizer(["a red circle"]), normalize=True)
    np.testing.assert_allclose(a, (img @ txt.T)[:, 0].numpy(), atol=1e-5)
    big = verifier.score([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)], {"prompt": "a red circle"})
    assert big.shape == (1,) and np.isfinite(big).all()  # resized to the tower's 32×32


def test_oracle_scores_its_own_ground_truth_one_and_blank_zero():
    rng = np.random.default_rng(0)
    images, captions = [], []
    for category in CATEGORIES:
        scene, caption, _ = sample_scene(category, rng)
        images.append(render_scene(scene))
        captions.append(caption)
    verifier = ShapesOracleVerifier()
    assert verifier.is_oracle
    for image, caption in zip(images, captions):
        assert verifier.score([image, np.zeros_like(image)], {"prompt": caption}).tolist() == [1.0, 0.0]


def roll_with(notes, width=64):
    """``notes``: (MIDI pitch, start column, length) at velocity 100."""
    roll = np.zeros((2, 64, width), np.float32)
    for pitch, start, length in notes:
        row = pitch_to_row(pitch)
        roll[0, row, start] = 100 / 127
        roll[1, row, start:start + length] = 100 / 127
    return roll


def test_piano_roll_verifiers_on_known_notes():
    mask = np.zeros((64, 64), bool)
    mask[:, 16:48] = True  # bars 2 and 3
    c4 = 60  # middle C (MIDI pitch)
    # outside the mask: a C major scale and a long C major triad
    context = [(c4 + step, c, 1) for c, step in enumerate((0, 2, 4, 5, 7, 9, 11, 12))]
    context += [(c4 + step, 8, 8) for step in (0, 4, 7)] + [(c4 + 12, 48, 16), (c4 + 7, 48, 16)]
    inside = [(c4 + (0, 2, 4, 5)[i % 4], 16 + 2 * i, 1) for i in range(12)]  # 12 onsets, even columns, in key
    odd = [(c4 + 1, 17, 1), (c4 + 6, 19, 1), (c4 + 4, 21, 1), (c4 + 7, 23, 1)]  # C#, F#: off key
    roll = roll_with(context + inside + odd)
    ctx = {"mask": mask}
    assert BusynessVerifier(8.0).score([roll], ctx)[0] == pytest.approx(0.0)  # 16 onsets over 2 bars
    assert BusynessVerifier(5.0).score([roll], ctx)[0] == pytest.approx(-3.0)
    assert BusynessVerifier(None).score([roll], ctx)[0] == 16
    # the key is estimated from the notes outside the mask (C major), not from the fill
    assert music_metrics.estimate_key(np.where(mask[None], 0.0, roll).astype(np.float32)) == (0, "major")
    assert InKeyVerifier().score([roll], ctx)[0] == pytest.approx(14 / 16)
    assert InKeyVerifier().score([roll], {**ctx, "key": (0, "major")})[0] == pytest.approx(14 / 16)
    # C# major holds C (its leading tone), F, C# and F#: 3 + 3 + 1 + 1 of the 16
    assert InKeyVerifier(key=(1, "major")).score([roll], ctx)[0] == pytest.approx(8 / 16)
    assert OnsetGridVerifier().score([roll], ctx)[0] == pytest.approx(12 / 16)
    empty = roll_with(context)
    assert InKeyVerifier().score([empty], ctx)[0] == 0.0 and OnsetGridVerifier().score([empty], ctx)[0] == 0.0


class Fixed(Verifier):
    """Returns given scores for outputs 0..N-1."""

    def __init__(self, scores, name="fixed"):
        super().__init__()
        self.scores, self.name = np.asarray(scores, float), name

    def _score(self, outputs, context):
        return self.scores[list(outputs)]


def test_rank_and_zscore_normalisation():
    np.testing.assert_allclose(normalise_scores([10, 30, 20, 20], "rank"), [0, 1, 0.5, 0.5])
    np.testing.assert_allclose(normalise_scores([1, 1, 1], "rank"), [0.5] * 3)
    np.testing.assert_allclose(normalise_scores([1, 2, 3], "zscore"), np.array([-1, 0, 1]) / np.sqrt(2 / 3))
    np.testing.assert_allclose(normalise_scores([4, 4], "zscore"), [0, 0])
    with pytest.raises(ValueError, match="rank"):
        normalise_scores([1], "minmax")


def test_ensemble_normalises_each_verifier_so_scale_does_not_dominate():
    a = Fixed([0.0, 1.0, 2.0, 3.0])  # prefers 3
    b = Fixed([3000.0, 2000.0, 1000.0, 0.0])  # prefers 0, on a 1000× scale
    for method in ("rank", "zscore"):
        ens = EnsembleVerifier([a, b], weights=[2.0, 1.0], normalise=method)
        scores = ens.score(range(4), {})
        assert int(np.argmax(scores)) == 3  # a's weight wins, not b's scale
    ens = EnsembleVerifier([a, b], weights=[2.0, 1.0], normalise="rank")
    np.testing.assert_allclose(ens.score(range(4), {}), 2 * np.array([0, 1, 2, 3]) / 3 + np.array([3, 2, 1, 0]) / 3)
    assert not ens.is_oracle and EnsembleVerifier([a, ShapesOracleVerifier()]).is_oracle


def test_staged_verifier_dispatches_on_stage():
    staged = StagedVerifier({"start": Fixed([1.0, 0.0])}, default=Fixed([0.0, 1.0]))
    assert staged.score([0, 1], {"stage": "start"}).tolist() == [1.0, 0.0]
    assert staged.score([0, 1], {"stage": "end"}).tolist() == [0.0, 1.0]


def test_non_finite_scores_are_refused():
    with pytest.raises(FloatingPointError):
        Fixed([np.nan]).score([0], {})


def test_diffusion_score_is_the_prompts_reduction_of_the_flow_error():
    """The self-verifier against its definition, computed by hand with the pipeline's own parts for one image;
    batching, the batch size and the candidates scored alongside change nothing (same (t, ε) for everyone)."""
    pipe = tiny_text_to_image_pipeline()
    with torch.no_grad():  # random weights nudged off their zero-initialised text paths
        for param in pipe.transformer.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    verifier = DiffusionScoreVerifier(pipe, times=(0.25, 0.75), draws=2, seed=5, batch_size=2)
    scores = verifier.score(images, {"prompt": "a red circle"})
    assert verifier.forward_passes == 3 * 2 * 2 * 2 and verifier.evaluations == 3

    x = torch.from_numpy(images[1]).permute(2, 0, 1).float()[None] / 127.5 - 1
    gen = torch.Generator().manual_seed(5)
    noise = [torch.randn(3, 32, 32, generator=gen) for _ in range(4)]
    context, pooled = pipe.prepare_text(["a red circle"], True, "cpu", torch.float32)  # [null text; prompt]
    total = 0.0
    with torch.no_grad():
        for t, eps in zip((0.25, 0.25, 0.75, 0.75), noise):
            xt, target = (1 - t) * x + t * eps, eps - x
            v = pipe.transformer(torch.cat([xt, xt]), torch.full((2,), t), pooled_text=pooled, context_states=context)
            err = (v - target).pow(2).flatten(1).mean(1)
            total += (err[0] - err[1]).item()
    assert abs(total) > 1e-4  # the nudged model does read the text
    assert scores[1] == pytest.approx(total / 4, rel=1e-4, abs=1e-6)

    alone = DiffusionScoreVerifier(pipe, times=(0.25, 0.75), draws=2, seed=5, batch_size=16)
    np.testing.assert_allclose(alone.score(images[::-1], {"prompt": "a red circle"}), scores[::-1], rtol=1e-5,
                               atol=1e-7)
    other_prompt = verifier.score(images, {"prompt": "a blue square"})
    assert not np.allclose(other_prompt, scores)  # the prompt is what is being judged


def test_diffusion_score_refuses_bad_settings_and_a_missing_prompt():
    pipe = tiny_text_to_image_pipeline()
    for kwargs in ({"times": ()}, {"times": (0.0, 0.5)}, {"times": (1.0,)}, {"draws": 0}):
        with pytest.raises(ValueError):
            DiffusionScoreVerifier(pipe, **kwargs)
    with pytest.raises(ValueError, match="prompt"):
        DiffusionScoreVerifier(pipe).score([np.zeros((32, 32, 3), np.uint8)], {})
