"""Multi-process training beyond the HDiT/DDP case: SANA with text (flow objective, per-item noise seeds), FSDP on
CPU processes over gloo, immiscible "assign" over the global batch, and bf16 mixed precision.

Each multi-process check compares N processes × batch B with one process × batch N·B (or FSDP with DDP) after
a few optimizer steps with gradient accumulation and the EMA, to float tolerance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genmodels.diffusion.flow import FlowObjective
from genmodels.diffusion.noise import GlobalBatch, assign_noise, assignment

from .test_multiprocess import ROOT, _run
from .test_train_dit import corpus_cache  # noqa: F401  (shared fixture)

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TOL = 1e-4  # relative, per tensor: float reduction order differs between batch splits


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A random (untrained) open_clip model in open_clip's folder layout: enough to condition SANA on text."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    return folder


def _sana_args(out: Path, clip: Path, batch: int, steps: int = 4, *extra: str) -> list[str]:
    return [str(ROOT / "training" / "train_dit.py"), "--model", "sana", "--config", "tiny", "--dataset", "shapes",
            "--dataset-args", '{"size": 32}', "--text-encoder", str(clip), "--output-dir", str(out),
            "--batch-size", str(batch), "--max-steps", str(steps), "--grad-accum", "2", "--checkpoint-every", "2",
            "--log-every", "1", "--threads", "1", *extra]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint: model.safetensors (DDP / one process) or FSDP's full state dict."""
    if (checkpoint / "model.safetensors").is_file():
        return load_file(str(checkpoint / "model.safetensors"))
    return torch.load(checkpoint / "pytorch_model_fsdp.bin", weights_only=True)


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max() / (a[k].float().abs().max() + 1e-12)) for k in a)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(a: Path, b: Path, step: int = 4) -> None:
    ca, cb = a / f"checkpoint-{step}", b / f"checkpoint-{step}"
    assert _max_rel_diff(_weights(ca), _weights(cb)) < TOL
    assert _max_rel_diff(load_file(str(ca / "ema.safetensors")), load_file(str(cb / "ema.safetensors"))) < TOL
    assert _losses(a)[:step] == pytest.approx(_losses(b)[:step], rel=1e-5)


# SANA (flow objective, text conditioning): DDP and FSDP


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """LINGEN_CACHE for the SANA runs (the shapes dataset is generated, nothing is cached)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sana_single(tmp_path_factory, tiny_clip, cache):
    out = tmp_path_factory.mktemp("sana-single")
    _run(_sana_args(out, tiny_clip, 4), 1, cache, 0)
    return out


@pytest.fixture(scope="module")
def sana_ddp(tmp_path_factory, tiny_clip, cache):
    out = tmp_path_factory.mktemp("sana-ddp")
    _run(_sana_args(out, tiny_clip, 2), 2, cache, 29631)
    return out


@pytest.mark.slow
def test_sana_two_processes_with_half_batch_match_one_process(sana_single, sana_ddp):
    """Per-item t, noise and caption dropout (FlowObjective with noise_seed) make the split irrelevant."""
    _assert_same_training(sana_single, sana_ddp)
    summary = json.loads((sana_ddp / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["distributed_type"] == "MULTI_CPU"
    # both ranks wrote into the one checkpoint folder (each rank's RNG state), and no temporary folder is left
    for step in (2, 4):
        assert {p.name for p in (sana_ddp / f"checkpoint-{step}").glob("random_states_*.pkl")} == {
            "random_states_0.pkl", "random_states_1.pkl"}
    assert not list(sana_ddp.glob("*.tmp-*"))


@pytest.mark.slow
def test_text_encoder_trained_with_the_model_under_ddp_matches_one_process(tiny_clip, tmp_path, cache):
    """--train-text-encoder: the captions are encoded outside the DDP-wrapped forward, so this checks that the
    text encoder's gradients are still averaged over the processes (and accumulated like the model's)."""
    extra = ("--train-text-encoder", "--text-lr-scale", "2", "--weight-decay", "0")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run(_sana_args(single, tiny_clip, 4, 4, *extra), 1, cache, 0)
    _run(_sana_args(ddp, tiny_clip, 2, 4, *extra), 2, cache, 29634)
    # The attention's key bias has an exactly-zero gradient (softmax ignores a shift shared by all keys): its
    # float noise, which Adam scales up to ±lr steps, differs between the splits. Compare the query and value
    # biases only.
    key = "text_encoder.transformer.resblocks.0.attn.in_proj_bias"
    weights, one = _weights(ddp / "checkpoint-4"), _weights(single / "checkpoint-4")
    for w in (weights, one):
        w[key] = w[key].view(3, -1)[[0, 2]]
    assert _max_rel_diff(one, weights) < TOL
    assert _losses(single) == pytest.approx(_losses(ddp), rel=1e-5)
    start = load_file(str(tiny_clip / "open_clip_model.safetensors"))
    assert not torch.equal(weights["text_encoder.ln_final.bias"], start["ln_final.bias"])  # it did train


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_ddp_and_resumes(sana_ddp, tiny_clip, tmp_path, cache):
    """FULL_SHARD over gloo, SanaBlocks wrapped: trains like DDP; its checkpoint (full state dict on rank 0,
    optimizer, unsharded EMA) resumes exactly; the final EMA pipeline is saved."""
    _run(_sana_args(tmp_path, tiny_clip, 2, 2), 2, cache, 29632, config="fsdp")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["distributed_type"] == "FSDP", f"the FSDP launch did not run FSDP: {summary}"
    assert summary["fsdp_units"] == 3, summary  # root + 2 SanaBlocks (tiny depth 2)
    _assert_same_training(sana_ddp, tmp_path, step=2)
    _run(_sana_args(tmp_path, tiny_clip, 2, 4, "--resume", "latest"), 2, cache, 29633, config="fsdp")
    _assert_same_training(sana_ddp, tmp_path, step=4)
    final = load_file(str(next((tmp_path / "pipeline" / "transformer").glob("*.safetensors"))))
    assert _max_rel_diff(load_file(str(tmp_path / "checkpoint-4" / "ema.safetensors")), final) == 0


# Immiscible "assign" over the global batch


def _hdit_args(out: Path, batch: int, steps: int = 4, *extra: str) -> list[str]:
    return [str(ROOT / "training" / "train_dit.py"), "--model", "hdit", "--config", "tiny", "--dataset", "pianoroll",
            "--dataset-args", '{"width": 32, "max_pieces": 40}', "--output-dir", str(out), "--batch-size", str(batch),
            "--max-steps", str(steps), "--grad-accum", "2", "--checkpoint-every", "2", "--log-every", "1",
            "--threads", "1", *extra]


@pytest.mark.slow
def test_assign_two_processes_match_one_process(tmp_path, corpus_cache):  # noqa: F811
    single, double = tmp_path / "single", tmp_path / "double"
    _run(_hdit_args(single, 4, 4, "--immiscible", "assign"), 1, corpus_cache, 0)
    _run(_hdit_args(double, 2, 4, "--immiscible", "assign"), 2, corpus_cache, 29634)
    _assert_same_training(single, double)


def _fake_processes(tensors_by_rank: list[dict[str, torch.Tensor]]):
    """GlobalBatch objects for simulated ranks: gather concatenates what every rank holds under the same key."""

    def for_rank(rank: int) -> GlobalBatch:
        def gather(t: torch.Tensor) -> torch.Tensor:
            key = next(k for k, v in tensors_by_rank[rank].items() if v is t)
            return torch.cat([r[key] for r in tensors_by_rank])

        return GlobalBatch(gather, rank)

    return for_rank


def test_assign_noise_over_the_global_batch_equals_one_big_batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 2, 4, 4, generator=g) * 3
    noise = torch.randn(8, 2, 4, 4, generator=g)
    whole = assign_noise(x0, noise)
    ranks = [{"x0": x0[i * 2 : (i + 1) * 2], "noise": noise[i * 2 : (i + 1) * 2]} for i in range(4)]
    for_rank = _fake_processes(ranks)
    parts = [assign_noise(r["x0"], r["noise"], for_rank(i)) for i, r in enumerate(ranks)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=0)
    # the global solution is a permutation of all the noise and beats solving each process's batch alone
    perm = assignment(x0, noise)
    assert sorted(perm.tolist()) == list(range(8))
    local = torch.cat([assign_noise(r["x0"], r["noise"]) for r in ranks])

    def cost(n):
        return (x0 - n).flatten(1).norm(dim=1).sum()

    assert cost(whole) <= cost(local) + 1e-9 and cost(whole) <= cost(noise) + 1e-9
    assert not torch.equal(whole, local)  # this example needs noise from another process


def test_edm_assign_keeps_sigma_and_conditioning_with_the_image():
    """Only the noise is permuted: each image keeps its σ and its conditioning, and is paired with the same noise
    whatever its position in the batch."""
    from genmodels.diffusion.edm import SIGMA_DATA
    from genmodels.diffusion.objectives import EDMObjective

    seen = []

    def model(x, sigma, class_labels):
        seen.append((x.detach().clone(), sigma.detach().clone(), class_labels.clone()))
        return torch.zeros_like(x)

    x0 = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2
    seeds, labels = torch.arange(11, 17), torch.arange(6)
    obj = EDMObjective(immiscible="assign", cond_keys={"class_labels": "class_labels"})
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    obj(model, {"pixel_values": x0, "noise_seed": seeds, "class_labels": labels})
    obj(model, {"pixel_values": x0[order], "noise_seed": seeds[order], "class_labels": labels[order]})

    def noise_of(x, sigma, images):  # invert x = (x0 + σ·ε)·c_in
        s = sigma.view(-1, 1, 1, 1)
        return (x * (s**2 + SIGMA_DATA**2).sqrt() - images) / s

    (xa, sa, la), (xb, sb, lb) = seen
    torch.testing.assert_close(sb, sa[order])
    assert la.tolist() == labels.tolist() and lb.tolist() == labels[order].tolist()
    na, nb = noise_of(xa, sa, x0), noise_of(xb, sb, x0[order])
    torch.testing.assert_close(nb, na[order], rtol=1e-4, atol=1e-4)


# FlowObjective: per-item seeds


def test_flow_objective_with_noise_seeds_does_not_depend_on_the_batch_split():
    calls = []

    def model(x, t, encoder_hidden_states=None, drop_text=None, **_):
        calls.append((t.clone(), drop_text.clone()))
        return x * 0.5 + encoder_hidden_states.mean((1, 2))[:, None, None, None]

    g = torch.Generator().manual_seed(2)
    batch = {"pixel_values": torch.randn(4, 3, 8, 8, generator=g), "noise_seed": torch.tensor([5, 6, 7, 8]),
             "encoder_hidden_states": torch.randn(4, 3, 2, generator=g)}
    objective = FlowObjective(text_drop_prob=0.5)
    whole = objective(model, batch, torch.Generator().manual_seed(0))
    halves = torch.cat([objective(model, {k: v[i : i + 2] for k, v in batch.items()},
                                  torch.Generator().manual_seed(99)) for i in (0, 2)])
    torch.testing.assert_close(halves, whole)
    torch.testing.assert_close(torch.cat([calls[1][0], calls[2][0]]), calls[0][0])
    assert torch.cat([calls[1][1], calls[2][1]]).tolist() == calls[0][1].tolist()
    # without noise_seed the shared generator is used (and the batch split matters)
    plain = {k: v for k, v in batch.items() if k != "noise_seed"}
    a = objective(model, plain, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, objective(model, plain, torch.Generator().manual_seed(0)))
    assert not torch.allclose(a, whole)


# bf16 mixed precision


@pytest.mark.slow
def test_bf16_flag_run_finishes_with_finite_loss_and_a_loadable_pipeline(tiny_clip, tmp_path, cache):
    from genmodels.loading import load_pipeline
    from genmodels.pipelines.text_to_image import TextToImagePipeline

    _run(_sana_args(tmp_path, tiny_clip, 4, 3, "--mixed-precision", "bf16"), 1, cache, 0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mixed_precision"] == "bf16" and summary["step"] == 3
    assert all(math.isfinite(x) for x in _losses(tmp_path))
    pipe = load_pipeline(TextToImagePipeline, tmp_path / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert next(pipe.transformer.parameters()).dtype == torch.float32  # fp32 master weights / EMA are saved
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow
def test_bf16_config_file_sets_the_precision(tmp_path, corpus_cache):  # noqa: F811
    """training/configs/bf16.yaml through accelerate launch (no --mixed-precision flag): bf16 autocast."""
    _run(_hdit_args(tmp_path, 4, 2), 1, corpus_cache, 29635, config="bf16")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mixed_precision"] == "bf16" and summary["num_processes"] == 1
    assert all(math.isfinite(x) for x in _losses(tmp_path))


def test_config_files_parse():
    """Every config in training/configs is one accelerate reads (its own loader)."""
    from accelerate.commands.config.config_args import load_config_from_file

    for path in sorted((ROOT / "training" / "configs").glob("*.yaml")):
        cfg = load_config_from_file(str(path))
        assert cfg.num_machines == 1, path
    fsdp = load_config_from_file(str(ROOT / "training" / "configs" / "fsdp.yaml"))
    assert str(fsdp.distributed_type).endswith("FSDP")
    assert fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"



def test_a_checkpoint_resumes_only_under_the_same_kind_of_launch(tmp_path):
    from training.loop import _check_checkpoint_kind

    fsdp, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    fsdp.mkdir()
    ddp.mkdir()
    (fsdp / "pytorch_model_fsdp.bin").write_bytes(b"")
    (ddp / "model.safetensors").write_bytes(b"")
    _check_checkpoint_kind(fsdp, fsdp=True)
    _check_checkpoint_kind(ddp, fsdp=False)
    with pytest.raises(ValueError, match="written by an FSDP run"):
        _check_checkpoint_kind(fsdp, fsdp=False)
    with pytest.raises(ValueError, match="fsdp.yaml or ddp.yaml"):
        _check_checkpoint_kind(ddp, fsdp=True)
