"""Test-time search over text-to-video clips: the generate fn, the chunk generator for Tree-of-Frames, the
verifiers, and ``run_search`` with all three strategies, on a tiny random Diffusion Mamba (8 frames of 32×32)."""

from __future__ import annotations

import numpy as np
import pytest

from genmodels.data.moving_shapes import clip_for_spec, parse_video_caption
from genmodels.io import ASSETS_DIR
from genmodels.search import (
    CLIPScoreVerifier,
    CLIPVideoVerifier,
    TreeConfig,
    UnitGenerator,
    Verifier,
    VideoChunkGenerator,
    VideoOracleVerifier,
    direction_agreement,
    generators,
    object_description,
    pixel_path_consistency,
    run_search,
    sample_candidates,
    text_to_video_generate_fn,
    tree_of_frames,
    tree_seed_budget,
    video_tree_config,
)
from tests.search.helpers import save_tiny_open_clip, tiny_text_to_video_pipeline

PROMPT = "a red circle moves to the right"
STEPS = 2
FRAMES = 8
CLIP_SHAPES = ASSETS_DIR / "clip-shapes"


@pytest.fixture(scope="module")
def pipe():
    return tiny_text_to_video_pipeline()


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory) -> CLIPVideoVerifier:
    return CLIPVideoVerifier.from_folder(save_tiny_open_clip(tmp_path_factory.mktemp("clip") / "clip"))


def _square_clip(xs, side: int = 32, colour=(230, 40, 40)) -> np.ndarray:
    """A 6-px square whose left edge is at ``xs[t]`` (None: absent) in frame t."""
    clip = np.zeros((len(xs), side, side, 3), np.uint8)
    for t, x in enumerate(xs):
        if x is not None:
            clip[t, 12:18, x:x + 6] = colour
    return clip


# Generate fn


def test_generate_fn_is_deterministic_and_batch_invariant(pipe):
    generate = text_to_video_generate_fn(pipe, PROMPT, num_inference_steps=STEPS)
    clips, nfe = generate([3, 4, 5])
    again, _ = generate([3, 4, 5])
    alone, _ = generate([4])
    assert nfe == STEPS and len(clips) == 3
    assert all(c.shape == (FRAMES, 32, 32, 3) and c.dtype == np.uint8 for c in clips)
    assert all(np.array_equal(a, b) for a, b in zip(clips, again))
    diff = np.abs(clips[1].astype(int) - alone[0].astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # own generator per seed; batched matmuls may round
    assert not np.array_equal(clips[0], clips[1])


def test_generate_fn_passes_first_frames_through(pipe):
    given = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cands = sample_candidates(text_to_video_generate_fn(pipe, PROMPT, num_inference_steps=STEPS, first_frames=given),
                              2, [0, 1])
    assert all(np.array_equal(c[:3], given) for c in cands.outputs)
    assert cands.total_nfe == 2 * STEPS


# Chunk generator


def test_chunk_generator_grows_by_units_and_keeps_earlier_frames_exactly(pipe):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 3, num_inference_steps=STEPS)
    assert isinstance(gen, UnitGenerator) and gen.num_units == 3  # ceil(8 / 3)
    first = gen.start(2, [0, 1])
    assert [s.shape[0] for s in first.states] == [3, 3] and first.nfe == 2 * STEPS
    second = gen.extend(first.states[1], 3, [2, 3, 4])
    assert [s.shape[0] for s in second.states] == [6] * 3 and second.nfe == 3 * STEPS
    assert all(np.array_equal(s[:3], first.states[1]) for s in second.states)
    assert not np.array_equal(second.states[0][3:], second.states[1][3:])  # one generator per seed
    last = gen.extend(second.states[0], 1, [5])
    assert last.states[0].shape[0] == FRAMES and np.array_equal(last.states[0][:6], second.states[0])
    with pytest.raises(ValueError, match="complete"):
        gen.extend(last.states[0], 1, [6])


def test_grown_units_denoise_only_the_frames_kept_and_cost_their_share(pipe):
    plain = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, num_inference_steps=STEPS)
    grown = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, grow=True, num_inference_steps=STEPS)
    first = grown.start(2, [0, 1])
    assert [s.shape[0] for s in first.states] == [2, 2] and first.nfe == 2 * STEPS
    assert grown.clip_nfe == pytest.approx(2 * STEPS * 2 / FRAMES)
    # a grown unit is a 2-frame clip of its own, not the first 2 frames of an 8-frame one
    alone = pipe(PROMPT, num_frames=2, num_inference_steps=STEPS, generator=generators([1])).frames[0]
    assert np.array_equal(first.states[1], alone)
    second = grown.extend(first.states[0], 3, [2, 3, 4])
    assert [s.shape[0] for s in second.states] == [4] * 3 and second.nfe == 3 * STEPS
    assert all(np.array_equal(s[:2], first.states[0]) for s in second.states)
    assert grown.clip_nfe == pytest.approx(STEPS * (2 * 2 + 3 * 4) / FRAMES)
    plain.start(2, [0, 1])
    assert plain.clip_nfe == 2 * STEPS
    assert "grow=True" in repr(grown)


def test_extend_steps_apply_to_continuations_only_and_are_counted(pipe):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, grow=True, extend_steps=1, num_inference_steps=3)
    first = gen.start(2, [0, 1])
    assert first.nfe == 2 * 3  # the first unit keeps num_inference_steps
    second = gen.extend(first.states[0], 2, [2, 3])
    assert second.nfe == 2 * 1 and all(np.array_equal(s[:2], first.states[0]) for s in second.states)
    assert gen.clip_nfe == pytest.approx((2 * 3 * 2 + 2 * 1 * 4) / FRAMES)
    # the continuation is the pipeline's own 1-step continuation, not a 3-step one
    one = pipe([PROMPT] * 2, num_frames=4, first_frames=first.states[0], num_inference_steps=1,
               generator=generators([2, 3]), output_type="np").frames
    assert all(np.array_equal(a, b) for a, b in zip(second.states, one))
    assert "extend_steps=1" in repr(gen)
    # given frames: the first unit continues them, still at num_inference_steps (it decides the motion)
    primed = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, grow=True, extend_steps=1, num_inference_steps=3,
                                 first_frames=first.states[0])
    assert primed.start(2, [0, 1]).nfe == 2 * 3
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="extend_steps"):
            VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, extend_steps=bad)


def test_previews_are_the_same_seeds_at_fewer_steps_and_are_counted(pipe):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 4, grow=True, preview_steps=1, num_inference_steps=3)
    drafts = gen.preview(None, 2, [5, 6])
    assert drafts.nfe == 2 * 1 and all(d.shape[0] == 4 for d in drafts.states)
    one = pipe([PROMPT] * 2, num_frames=4, num_inference_steps=1, generator=generators([5, 6]),
               output_type="np").frames
    assert all(np.array_equal(a, b) for a, b in zip(drafts.states, one))
    full = gen.start(2, [5, 6])
    assert full.nfe == 2 * 3 and not np.array_equal(full.states[0], drafts.states[0])
    more = gen.preview(full.states[0], 3, [7, 8, 9])  # a continuation's previews keep the parent's frames
    assert all(s.shape[0] == 8 and np.array_equal(s[:4], full.states[0]) for s in more.states)
    assert gen.clip_nfe == pytest.approx((2 * 1 * 4 + 2 * 3 * 4 + 3 * 1 * 8) / FRAMES)
    assert "preview_steps=1" in repr(gen)
    with pytest.raises(ValueError, match="no preview_steps"):
        VideoChunkGenerator(pipe, PROMPT, FRAMES, 4).preview(None, 1, [0])
    with pytest.raises(ValueError, match="nothing left to extend"):
        gen.preview(more.states[0], 1, [0])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="preview_steps"):
            VideoChunkGenerator(pipe, PROMPT, FRAMES, 4, preview_steps=bad)


def test_a_screened_video_tree_draws_its_first_units_from_the_best_drafts(pipe, clip_video):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 4, grow=True, preview_steps=1, num_inference_steps=2)
    config = video_tree_config(2, gen.num_units, first_candidates=1, screen=3)
    assert config.screen == [3, 0] and tree_seed_budget(config) == 2 * 3 + 2
    two = video_tree_config(2, 2, first_candidates=1, screen=3, extend_candidates=2)
    assert two.candidates == [1, 2] and tree_seed_budget(two) == 2 * 3 + 2 * 2
    with pytest.raises(ValueError, match="extend_candidates"):
        video_tree_config(2, 2, extend_candidates=0)
    result = tree_of_frames(gen, clip_video, config, context={"prompt": PROMPT}, seed=0)
    # per root: 3 one-step drafts of 4 frames, the best seed's 2-step draw; 1 of 2 branches continued (2 steps)
    assert result.nfe_per_depth == [2 * (3 * 1 + 2), 2] and result.output.shape[0] == FRAMES
    assert gen.clip_nfe == pytest.approx((2 * (3 * 1 + 2) * 4 + 2 * 8) / FRAMES)


def test_chunk_generator_with_a_primer_starts_by_continuing_it(pipe):
    primer = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, num_inference_steps=STEPS, first_frames=primer)
    assert gen.num_units == 3
    (state,) = gen.start(1, [0]).states
    assert state.shape[0] == 4 and np.array_equal(state[:2], primer)


@pytest.mark.parametrize("frames_per_unit", [0, 9, True])
def test_chunk_generator_refuses_a_bad_unit(pipe, frames_per_unit):
    with pytest.raises(ValueError, match="frames_per_unit"):
        VideoChunkGenerator(pipe, PROMPT, FRAMES, frames_per_unit)


def test_tree_with_all_ones_is_one_plain_unit_by_unit_generation(pipe, clip_video):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, num_inference_steps=STEPS)
    config = TreeConfig(branches=[1] * 4, candidates=[1] * 4)
    result = tree_of_frames(gen, clip_video, config, context={"prompt": PROMPT}, seed=10)
    frames = None
    for unit, seed in enumerate(range(10, 14)):
        clip = pipe(PROMPT, num_frames=FRAMES, num_inference_steps=STEPS, first_frames=frames,
                    generator=generators([seed])).frames[0]
        frames = clip[: 2 * (unit + 1)]
    assert np.array_equal(result.output, frames) and result.output.shape[0] == FRAMES
    assert result.nfe == 4 * STEPS and result.seeds_used == 4


# Tree schedule


def test_video_tree_config_scales_video_t1():
    sixteen = video_tree_config(8, 16, first_candidates=5)
    assert sixteen.judge_depths == TreeConfig.video_t1(16).judge_depths == {4, 9, 13}
    assert sixteen.branches == [8] + [1] * 15 and sixteen.candidates == [5] + [1] * 15
    four = video_tree_config(4, 4)
    assert four.judge_depths == {1, 2} and four.branches == [4, 1, 1, 1] and four.candidates == [2, 1, 1, 1]
    assert video_tree_config(3, 2).judge_depths == {0} and video_tree_config(3, 1).judge_depths == set()
    assert tree_seed_budget(four) == 8 + 4 + 4 + 4
    assert tree_seed_budget(TreeConfig(branches=[2, 3], candidates=[2, 2])) == 4 + 12


def test_video_tree_nfe_follows_the_median_pruning(pipe):
    class Distinct(Verifier):  # distinct scores per branch, so the median halves exactly
        def _score(self, outputs, context):
            return [float(c.astype(np.int64).sum() % 9973) for c in outputs]

    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 2, num_inference_steps=STEPS)
    result = tree_of_frames(gen, Distinct(), video_tree_config(4, 4), context={"prompt": PROMPT})
    assert result.live_per_depth == [4, 2, 1, 1]
    assert result.nfe_per_depth == [8 * STEPS, 4 * STEPS, 2 * STEPS, 1 * STEPS]


# Verifiers


def test_oracle_verifier_ranks_the_true_clip_above_a_blank_one():
    spec = parse_video_caption(PROMPT)
    truth = clip_for_spec(spec, seed=3).frames
    verifier = VideoOracleVerifier()
    scores = verifier.score([truth, np.zeros_like(truth)], {"prompt": PROMPT})
    assert scores.tolist() == [1.0, 0.0] and verifier.is_oracle and verifier.evaluations == 2
    assert verifier.score([truth], {"spec": spec}).tolist() == [1.0]


def test_oracle_verifier_gives_partial_credit_and_follows_the_stage():
    truth = clip_for_spec(parse_video_caption(PROMPT), seed=3).frames
    wrong_way = truth[::-1].copy()  # the circle moves left: object and identity hold, motion fails
    verifier = VideoOracleVerifier()
    assert verifier.score([wrong_way], {"prompt": PROMPT}).tolist() == [pytest.approx(2 / 3)]
    # the first unit cannot show motion: "start" counts object and identity only
    assert verifier.score([truth[:2]], {"prompt": PROMPT, "stage": "start"}).tolist() == [1.0]
    assert verifier.score([truth[:2]], {"prompt": PROMPT, "stage": "final"}).tolist() == [pytest.approx(2 / 3)]
    only_motion = VideoOracleVerifier(stage_keys={"final": ["motion"]})
    assert only_motion.score([wrong_way], {"prompt": PROMPT, "stage": "final"}).tolist() == [0.0]
    with pytest.raises(ValueError, match="stage keys"):
        VideoOracleVerifier(stage_keys={"start": ["colour"]})


def test_object_description_drops_the_motion_words():
    assert object_description({"prompt": "a video of an orange circle moving up and a blue square stays still"
                               .replace("stays", "staying")}) == "an orange circle and a blue square"
    assert object_description({"prompt": PROMPT}) == "a red circle"
    assert object_description({"prompt": "a cat on a mat"}) == "a cat on a mat"  # outside the grammar: as given


def test_pixel_path_consistency_prefers_steady_motion():
    steady = _square_clip([2, 4, 6, 8, 10, 12, 14, 16])
    jumpy = _square_clip([2, 14, 4, 16, 6, 18, 8, 20])
    vanishing = _square_clip([2, 4, None, None, 10, 12, 14, 16])
    assert pixel_path_consistency(steady) == pytest.approx(0.0, abs=1e-12)
    assert pixel_path_consistency(jumpy) < -0.3
    assert pixel_path_consistency(vanishing) == pytest.approx(-0.25)  # 2 of 8 frames empty, the path unbroken
    assert pixel_path_consistency(np.zeros_like(steady)) == -1.0


def test_direction_agreement_reads_the_stated_direction():
    right = [{"colour": "red", "motion": "right"}]
    moving = _square_clip([2, 4, 6, 8, 10, 12, 14, 16])  # 2 px per frame to the right
    # displacement over frames 0..4 is 8 px = 0.25 of the side; expected 1.5 px/frame · 4 = 0.1875: off by 1/3
    assert direction_agreement(moving, right) == pytest.approx(-1 / 3)
    still = _square_clip([8] * 8)
    assert direction_agreement(still, right) == pytest.approx(-1.0)
    assert direction_agreement(moving[::-1].copy(), right) == pytest.approx(-2.0)  # capped at 2
    assert direction_agreement(still, [{"colour": "red", "motion": "still"}]) == pytest.approx(0.0)
    up = _square_clip([8] * 8)
    for t in range(8):  # the same square moving up 1.5 px per frame on average (rows 26-t·1.5)
        up[t] = 0
        y = 20 - int(round(1.5 * t))
        up[t, y:y + 6, 8:14] = (230, 40, 40)
    assert direction_agreement(up, [{"colour": "red", "motion": "up"}]) > -0.1
    assert direction_agreement(up, right) < -1.0
    # another colour is not the named object: a missing group costs the most
    assert direction_agreement(moving, [{"colour": "blue", "motion": "right"}]) == -2.0
    # the window is the full clip's no-bounce half: two frames of an 8-frame clip already count
    assert direction_agreement(moving[:2], right, num_frames=8) == pytest.approx(-1 / 3)
    assert direction_agreement(moving[:1], right, num_frames=8) == 0.0  # nothing to judge yet


def test_direction_agreement_follows_each_named_colour():
    clip = _square_clip([2, 4, 6, 8, 10, 12, 14, 16])  # red, moving right
    clip[:, 24:30, 12:18] = (40, 90, 240)  # a blue square staying still below it
    objects = [{"colour": "red", "motion": "right"}, {"colour": "blue", "motion": "still"}]
    swapped = [{"colour": "red", "motion": "still"}, {"colour": "blue", "motion": "right"}]
    assert direction_agreement(clip, objects) == pytest.approx(-1 / 6)  # (1/3 + 0) / 2
    assert direction_agreement(clip, swapped) < -1.0


def test_clip_video_direction_term_counts_only_with_a_weight(pipe, clip_video):
    clips, _ = text_to_video_generate_fn(pipe, PROMPT, num_inference_steps=STEPS)([0, 1])
    context = {"prompt": PROMPT}
    with_direction = CLIPVideoVerifier(clip_video.clip, direction_weight=0.25)
    terms = with_direction.terms(clips, context)
    assert np.allclose(terms["direction"], [direction_agreement(c, parse_video_caption(PROMPT)["objects"])
                                            for c in clips])
    assert (terms["direction"] < 0).all()  # a random model's clips do not move to the right
    assert np.array_equal(clip_video.terms(clips, context)["direction"], terms["direction"])  # computed at weight 0
    plain = clip_video.terms(clips, context)
    assert np.allclose(clip_video.score(clips, context), plain["clip"] + 0.5 * plain["temporal"] + 0.5 * plain["path"])
    assert np.allclose(with_direction.score(clips, context),
                       clip_video.score(clips, context) + 0.25 * terms["direction"])
    assert np.array_equal(with_direction.terms(clips, {**context, "stage": "start"})["direction"], [0.0, 0.0])
    other = {"prompt": "a cat on a mat"}  # outside the captions: no direction to read
    assert np.array_equal(with_direction.terms(clips, other)["direction"], [0.0, 0.0])


def test_clip_video_scores_are_finite_deterministic_and_stage_dependent(pipe, clip_video):
    clips, _ = text_to_video_generate_fn(pipe, PROMPT, num_inference_steps=STEPS)([0, 1, 2])
    context = {"prompt": PROMPT}
    final = clip_video.score(clips, {**context, "stage": "final"})
    assert np.isfinite(final).all() and np.array_equal(final, clip_video.score(clips, context))
    assert np.array_equal(final, clip_video.score(clips, {**context, "stage": "final"}))
    start = clip_video.score(clips, {**context, "stage": "start"})
    assert not np.allclose(start, final)  # no path term at the start
    terms = clip_video.terms(clips, context)
    assert np.allclose(final, terms["clip"] + 0.5 * terms["temporal"] + 0.5 * terms["path"])
    assert np.allclose(final, clip_video.combine(terms))
    first_two = CLIPVideoVerifier(clip_video.clip, start_frames=2)
    assert np.allclose(first_two.score(clips, {**context, "stage": "start"}),
                       clip_video.score([c[:2] for c in clips], {**context, "stage": "start"}))


@pytest.mark.skipif(not (CLIP_SHAPES / "open_clip_config.json").is_file(),
                    reason="the shipped shapes CLIP is not built")
def test_clip_video_with_the_shapes_clip_prefers_the_true_clip_over_corruptions():
    verifier = CLIPVideoVerifier(CLIPScoreVerifier.from_folder(CLIP_SHAPES))
    truth = clip_for_spec(parse_video_caption(PROMPT), seed=3).frames
    recoloured = truth.copy()
    recoloured[4:] = recoloured[4:, ..., [1, 2, 0]]
    blanked = truth.copy()
    blanked[3:6] = 0
    scores = verifier.score([truth, recoloured, blanked, np.zeros_like(truth)], {"prompt": PROMPT})
    assert scores[0] > scores[1:].max()
    frozen = np.repeat(truth[:1], len(truth), axis=0)  # the right object, standing still
    plain, directed = verifier, CLIPVideoVerifier(verifier.clip, direction_weight=0.25)
    assert plain.score([truth, frozen], {"prompt": PROMPT})[1] >= plain.score([truth], {"prompt": PROMPT})[0] - 0.05
    scores = directed.score([truth, frozen, truth[::-1].copy()], {"prompt": PROMPT})
    assert scores[0] > scores[1] > scores[2]


# run_search


@pytest.mark.parametrize("strategy", ["best-of-n", "tournament"])
def test_run_search_picks_the_verifier_argmax_among_clips(pipe, clip_video, strategy):
    result = run_search(strategy, verifier=clip_video, context={"prompt": PROMPT}, n=4, seeds=[7, 8, 9, 10],
                        generate_fn=text_to_video_generate_fn(pipe, PROMPT, num_inference_steps=STEPS), batch_size=2)
    assert result.index == int(np.argmax(result.scores)) and result.seed == 7 + result.index
    assert result.output.shape == (FRAMES, 32, 32, 3) and result.nfe == 4 * STEPS
    assert result.comparisons == (3 if strategy == "tournament" else 0)


def test_run_search_tree_of_frames_over_chunks(pipe, clip_video):
    gen = VideoChunkGenerator(pipe, PROMPT, FRAMES, 4, num_inference_steps=STEPS)
    config = video_tree_config(2, gen.num_units)  # 2 roots × 2 first-unit draws, judged at depth 0, then 1 child
    result = run_search("tree-of-frames", verifier=clip_video, context={"prompt": PROMPT}, unit_generator=gen,
                        tree_config=config, seed=5)
    assert result.output.shape == (FRAMES, 32, 32, 3) and result.seed is None
    assert result.tree.live_per_depth == [1, 1] and result.nfe == (4 + 1) * STEPS
    assert len(result.scores) == 1 and np.isfinite(result.scores).all()
