"""Tree-of-Frames: NFE accounting, median pruning, stages, and the piano-roll bar generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genmodels.search import (
    BusynessVerifier,
    PianoRollBarGenerator,
    PreviewingUnitGenerator,
    StagedVerifier,
    TreeConfig,
    UnitBatch,
    UnitGenerator,
    Verifier,
    default_stage,
    motion_from_start_stage,
    prune_at_median,
    run_search,
    tree_of_frames,
)

NFE_PER_UNIT = 60  # Pyramid-Flow: 3 stages × 20 steps per latent frame


class ToyUnits:
    """A state is the tuple of seeds of its units; every candidate costs NFE_PER_UNIT."""

    def __init__(self):
        self.calls = []

    def start(self, n_candidates, seeds):
        self.calls.append(("start", None, list(seeds)))
        return UnitBatch([(s,) for s in seeds], NFE_PER_UNIT * n_candidates)

    def extend(self, state, n_candidates, seeds):
        self.calls.append(("extend", state, list(seeds)))
        return UnitBatch([(*state, s) for s in seeds], NFE_PER_UNIT * n_candidates)

    def output(self, state):
        return state


class Recording(Verifier):
    """Score = ``fn(state)``; records the stage of every call."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.stages = fn, []

    def _score(self, outputs, context):
        self.stages.append((context["stage"], context["depth"], len(outputs)))
        return [self.fn(o) for o in outputs]


def test_toy_generator_satisfies_the_protocol():
    assert isinstance(ToyUnits(), UnitGenerator)


def test_video_t1_default_costs_6600_against_960():
    verifier = Recording(lambda s: (s[0] * 7919) % 1009)  # distinct per root: pruning halves exactly
    result = tree_of_frames(ToyUnits(), verifier, TreeConfig.video_t1(16))
    assert result.nfe == 6600 and 16 * NFE_PER_UNIT == 960
    assert result.nfe_per_depth[:2] == [2400, 960]
    assert sum(result.nfe_per_depth[2:5]) == 1440 and sum(result.nfe_per_depth[5:10]) == 1200
    assert sum(result.nfe_per_depth[10:14]) == 480 and sum(result.nfe_per_depth[14:]) == 120
    assert result.live_per_depth == [8] * 4 + [4] * 5 + [2] * 4 + [1] * 3
    assert len(result.leaves) == 1 and len(result.output) == 16
    assert result.seeds_used == 6600 // NFE_PER_UNIT


def test_small_tree_nfe_seeds_and_pruning():
    toy = ToyUnits()
    verifier = Recording(lambda s: sum(s))  # later seeds score higher
    config = TreeConfig(branches=[2, 2, 1], candidates=[3, 2, 1], judge_depths={1})
    result = tree_of_frames(toy, verifier, config, seed=100)
    # depth 0: 2 roots × 3 candidates; depth 1: 4 children × 2; judged 4 -> 2; depth 2: 2 × 1
    assert result.nfe_per_depth == [6 * 60, 8 * 60, 2 * 60] and result.nfe == 16 * 60
    assert result.live_per_depth == [2, 2, 2] and result.seeds_used == 16
    assert [c[2] for c in toy.calls][:2] == [[100, 101, 102], [103, 104, 105]]
    # best of each root's candidates: the last seed; then the two children of root 105 win the median cut
    assert toy.calls[2][1] == (102,) and toy.calls[4][1] == (105,)
    # children (102, 107), (102, 109), (105, 111), (105, 113): sums 209 211 216 218, median 213.5
    assert result.leaves == [(105, 111, 114), (105, 113, 115)]
    assert result.output == (105, 113, 115) and result.leaf_scores.tolist() == [330.0, 333.0]
    # scored: 2 × 3 and 4 × 2 candidates, 4 judged, 2 leaves (no call for single candidates)
    assert verifier.stages == [("start", 0, 3)] * 2 + [("end", 1, 2)] * 4 + [("end", 1, 4), ("final", 2, 2)]
    assert result.verifier_evaluations == 6 + 8 + 4 + 2


def test_all_ones_tree_is_one_plain_generation():
    result = tree_of_frames(ToyUnits(), Recording(lambda s: 0.0), TreeConfig([1] * 5, [1] * 5, {2}), seed=7)
    assert result.output == (7, 8, 9, 10, 11) and result.nfe == 5 * NFE_PER_UNIT


@pytest.mark.parametrize("scores, kept", [
    ([1, 2, 3, 4], [2, 3]),
    ([1, 2, 3], [1, 2]),
    ([1, 2, 2, 2], [1, 2, 3]),  # ties at the median all stay
    ([5, 5, 5], [0, 1, 2]),
    ([3], [0]),
    ([4, 1, 4, 1], [0, 2]),
])
def test_median_pruning(scores, kept):
    assert prune_at_median(scores).tolist() == kept


def test_stage_schedule():
    assert [default_stage(d, 6) for d in range(6)] == ["start", "motion", "motion", "motion", "end", "end"]
    assert [motion_from_start_stage(d, 6) for d in range(6)] == ["motion"] * 4 + ["end", "end"]
    assert [motion_from_start_stage(d, 2) for d in range(2)] == ["motion", "end"]


def test_run_search_passes_the_stage_schedule_to_the_tree():
    config = TreeConfig(branches=[2, 1], candidates=[2, 1], judge_depths={0})
    seen = {}
    for name, fn in (("default", None), ("motion", motion_from_start_stage)):
        verifier = Recording(lambda s: sum(s))
        run_search("tree-of-frames", verifier=verifier, unit_generator=ToyUnits(), tree_config=config, stage_fn=fn)
        seen[name] = {stage for stage, depth, _ in verifier.stages if depth == 0}
    assert seen == {"default": {"start"}, "motion": {"motion"}}


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="one entry per unit"):
        TreeConfig([2, 1], [1])
    with pytest.raises(ValueError, match="judge_depths"):
        TreeConfig([2, 1], [1, 1], {2})
    with pytest.raises(ValueError, match="screen needs one entry per unit"):
        TreeConfig([2, 1], [1, 1], screen=[3])
    with pytest.raises(ValueError, match="at least that depth's candidates"):
        TreeConfig([2, 1], [2, 1], screen=[1, 0])
    with pytest.raises(ValueError, match="at least that depth's candidates"):
        TreeConfig([2, 1], [1, 1], screen=[-1, 0])
    assert TreeConfig([2, 1], [1, 1]).screen == [0, 0]


class PreviewingToy(ToyUnits):
    """ToyUnits whose previews cost PREVIEW_NFE and whose full draws record which seeds they were given."""

    PREVIEW_NFE = 12

    def preview(self, parent, n_candidates, seeds):
        self.calls.append(("preview", parent, list(seeds)))
        base = () if parent is None else parent
        return UnitBatch([(*base, s) for s in seeds], self.PREVIEW_NFE * n_candidates)


def test_screened_units_draw_only_the_best_previews_seeds_in_full():
    toy = PreviewingToy()
    assert isinstance(toy, PreviewingUnitGenerator) and not isinstance(ToyUnits(), PreviewingUnitGenerator)
    # the score peaks at seed ≡ 2 (mod 5): each root's previews 0-4 and 5-9 rank 2 (7) first, then 1 / 3 (6 / 8)
    verifier = Recording(lambda s: -abs(s[-1] % 5 - 2) + 0.1 * (s[-1] % 5 == 1))
    config = TreeConfig(branches=[2, 1], candidates=[2, 1], judge_depths={0}, screen=[5, 0])
    result = tree_of_frames(toy, verifier, config, seed=0)
    assert toy.calls[0] == ("preview", None, [0, 1, 2, 3, 4]) and toy.calls[1] == ("start", None, [1, 2])
    assert toy.calls[2] == ("preview", None, [5, 6, 7, 8, 9]) and toy.calls[3] == ("start", None, [6, 7])
    # each root the best of its two full draws (2, 7); both tie at the median cut and live on, one seed each
    assert [c[0] for c in toy.calls[4:]] == ["extend", "extend"] and toy.calls[4][2] == [10]
    # NFE: 2 × (5 previews + 2 full draws) + 2 continuations
    assert result.nfe_per_depth == [2 * (5 * 12 + 2 * 60), 2 * 60] and result.seeds_used == 12
    assert verifier.stages[0] == ("start", 0, 5)  # previews are judged with the unit's own stage
    # a generator that cannot preview is refused before anything is drawn
    plain = ToyUnits()
    with pytest.raises(ValueError, match="no preview method"):
        tree_of_frames(plain, verifier, config)
    assert plain.calls == []


# Piano rolls


@pytest.fixture(scope="module")
def pipe():
    from genmodels.diffusion.sampling import make_edm_scheduler
    from genmodels.hdit import HDiT
    from genmodels.pipelines import PianoRollInpaintPipeline

    torch.manual_seed(0)
    model = HDiT(**{**HDiT.tiny_config(), "sample_size": [64, 32]})  # a 2-bar window
    pipe = PianoRollInpaintPipeline(transformer=model.eval(), scheduler=make_edm_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def primer():
    roll = np.zeros((2, 64, 16), np.float32)
    for c in range(0, 16, 4):
        roll[0, 30 + c // 4, c] = 90 / 127
        roll[1, 30 + c // 4, c:c + 2] = 90 / 127
    return roll


def test_piano_roll_tree_generates_bar_by_bar(pipe):
    gen = PianoRollBarGenerator(pipe, primer(), num_units=3, num_inference_steps=2, repaint=1)
    verifier = StagedVerifier({"start": BusynessVerifier(4.0)}, default=BusynessVerifier(6.0))
    config = TreeConfig(branches=[2, 1, 1], candidates=[2, 2, 1], judge_depths={1})
    result = run_search("tree-of-frames", unit_generator=gen, verifier=verifier, tree_config=config, seed=3,
                        context={})
    tree = result.tree
    roll = result.output
    assert roll.shape == (2, 64, 64)
    assert np.array_equal(roll[:, :, :16], primer())  # the primer is kept exactly
    live = tree.live_per_depth
    assert live[0] == 2 and 1 <= live[1] <= 2
    calls = 2 * 1  # steps × repaint, per batched call
    assert tree.nfe == calls * (2 * 2 + live[0] * 2 + live[1] * 1) == result.nfe
    # verifier context: the generated region grows by a bar per depth
    assert gen.verifier_context(0)["mask"][:, 16:32].all() and not gen.verifier_context(0)["mask"][:, 32:].any()
    # deterministic: same seed, same roll
    again = run_search("tree-of-frames", unit_generator=gen, verifier=verifier, tree_config=config, seed=3)
    assert np.array_equal(again.output, roll)


def test_piano_roll_extension_sees_at_most_one_window(pipe, monkeypatch):
    gen = PianoRollBarGenerator(pipe, primer(), num_units=3, num_inference_steps=2, repaint=1)
    seen = []
    original = pipe.inpaint_batch

    def spy(rolls, masks, **kw):
        seen.append((rolls.shape, masks[0].any(0).nonzero()[0].tolist(), len(kw["generator"])))
        return original(rolls, masks, **kw)

    monkeypatch.setattr(pipe, "inpaint_batch", spy)
    state = gen.start(3, [0, 1, 2]).states[0]
    state = gen.extend(state, 1, [3]).states[0]
    gen.extend(state, 2, [4, 5])
    assert seen[0] == ((3, 2, 64, 32), list(range(16, 32)), 3)  # primer + bar 1
    assert seen[1] == ((1, 2, 64, 32), list(range(16, 32)), 1)  # columns 16-48: the 2-bar window ending at 48
    assert seen[2] == ((2, 2, 64, 32), list(range(16, 32)), 2)
    with pytest.raises(ValueError, match="complete"):
        gen.extend(gen.extend(state, 1, [6]).states[0], 1, [7])
