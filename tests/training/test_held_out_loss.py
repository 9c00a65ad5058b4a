"""The training loop: its held-out loss with ``eval_samples`` scores the same items, noise and noise levels whatever
the run's batch size and seed (immiscible runs are scored with plain noise); its 0 intervals mean "at the end"."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from genmodels.diffusion.edm import SigmaSampler
from genmodels.diffusion.objectives import EDMObjective
from genmodels.models import build_model
from training.loop import TrainConfig, held_out_loss


class Rolls(torch.utils.data.Dataset):
    """A fixed set of random 2×16×16 images."""

    def __init__(self, n: int = 40):
        self.x = torch.rand(n, 2, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("hdit", "tiny")
    for p in m.parameters():  # the zero-initialised outputs would make every loss the same
        p.data.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _objective(immiscible="none", k=4):
    return EDMObjective(sigma_sampler=SigmaSampler(image_d=16), immiscible=immiscible, immiscible_k=k)


def test_fixed_items_and_noise_for_any_batch_and_seed(model):
    data = Rolls()
    losses = [held_out_loss(model, _objective(), data, TrainConfig("x", batch_size=b, seed=s, eval_samples=24), "cpu")
              for b, s in ((4, 0), (32, 0), (8, 7))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0] == pytest.approx(losses[2], rel=1e-5)
    # the old behaviour depends on both: 4 batches of the training batch size, noise from the run's seed
    old = [held_out_loss(model, _objective(), data, TrainConfig("x", batch_size=b, seed=s), "cpu")
           for b, s in ((4, 0), (8, 7))]
    assert abs(old[0] - old[1]) > 1e-4 * abs(old[0])
    # more items than the set has: all of it, no error
    assert held_out_loss(model, _objective(), data, TrainConfig("x", eval_samples=1000), "cpu") > 0


def test_immiscible_runs_are_scored_with_plain_noise(model):
    data = Rolls()
    cfg = TrainConfig("x", eval_samples=24)
    plain = held_out_loss(model, _objective(), data, cfg, "cpu")
    for kind, k in (("knn", 8), ("assign", 4)):
        assert held_out_loss(model, _objective(kind, k), data, cfg, "cpu") == pytest.approx(plain, rel=1e-6)
    # while training, the nearest-of-8 noise is closer to the data than plain noise is (what immiscible does)
    x0 = data.x[:8]
    g = torch.Generator().manual_seed(0)
    from genmodels.diffusion.noise import training_noise

    near = training_noise(x0, "knn", 8, generator=g)
    rand = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    assert (near - x0).flatten(1).norm(dim=1).mean() < (rand - x0).flatten(1).norm(dim=1).mean()


def test_checkpoint_and_log_every_zero_mean_only_at_the_end(model, tmp_path):
    """``checkpoint_every=0`` / ``log_every=0``: one checkpoint and one log line, at the last step (it used to divide
    by zero after the first step); a negative interval is refused before any step."""
    from training.checkpoint import list_checkpoints
    from training.loop import train

    cfg = TrainConfig(str(tmp_path / "run"), max_steps=3, batch_size=4, checkpoint_every=0, log_every=0)
    train(cfg, copy.deepcopy(model).train(), _objective(), Rolls())
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [3]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "loss" in e] == [3]
    with pytest.raises(ValueError, match="checkpoint_every must be ≥ 0"):
        train(TrainConfig(str(tmp_path / "bad"), max_steps=3, batch_size=4, checkpoint_every=-1), model,
              _objective(), Rolls())
    assert not list_checkpoints(tmp_path / "bad")
