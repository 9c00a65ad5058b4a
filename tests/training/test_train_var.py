"""training/train_vqvae.py and training/train_var.py end to end on tiny configs (real shapes-world data)."""

from __future__ import annotations

import json

import pytest
import torch

from genmodels.loading import load_pipeline
from genmodels.pipelines.var import VARPipeline
from genmodels.text import CLIPTextEncoder
from genmodels.var.vqvae import MultiScaleVQVAE
from training import train_var, train_vqvae


@pytest.fixture(scope="module")
def tiny_vqvae(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqvae")
    torch.set_num_threads(1)
    metrics = train_vqvae.main(["--output-dir", str(root / "vae"), "--config", "tiny", "--max-steps", "60",
                                "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "5", "--eval-images", "24",
                                "--log-every", "5", "--checkpoint-every", "30", "--restart-every", "10"])
    return root / "vae", metrics


def test_train_vqvae_reports_reconstruction_and_usage_per_scale(tiny_vqvae):
    folder, metrics = tiny_vqvae
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["steps"] == 60 and saved["patch_nums"] == [1, 2, 4]
    assert len(saved["recon_mse_upto_scale"]) == len(saved["codebook_usage_per_scale"]) == 3
    # decoding more scales reconstructs better
    assert saved["recon_mse_upto_scale"][-1] < saved["recon_mse_upto_scale"][0]
    assert all(0 < u <= 1 for u in saved["codebook_usage_per_scale"])
    log = [json.loads(line) for line in folder.with_name("vae.log.jsonl").read_text().splitlines()]
    assert log[-1]["mse"] < log[0]["mse"]
    vae = MultiScaleVQVAE.from_pretrained(folder, use_safetensors=True)
    assert vae.quantize.usage.sum() > 0  # the usage EMA is saved with the weights


def test_train_vqvae_resumes_from_its_checkpoint(tiny_vqvae, tmp_path):
    folder, _ = tiny_vqvae
    ckpt = folder.with_name("vae.ckpt")
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 60
    out = tmp_path / "vae"
    import shutil

    shutil.copytree(ckpt, tmp_path / "vae.ckpt")
    metrics = train_vqvae.main(["--output-dir", str(out), "--config", "tiny", "--max-steps", "62", "--batch-size",
                                "8", "--eval-images", "8", "--resume", "--checkpoint-every", "0"])
    assert metrics["steps"] == 62


def test_train_var_saves_a_working_pipeline(tiny_vqvae, tmp_path):
    vae_dir, _ = tiny_vqvae
    clip_dir = tmp_path / "clip"
    torch.manual_seed(0)
    CLIPTextEncoder(**CLIPTextEncoder.tiny_config()).save_pretrained(clip_dir, safe_serialization=True)
    out = tmp_path / "var"
    config = tmp_path / "var.json"
    from genmodels.var.var import VARTransformer

    config.write_text(json.dumps({**VARTransformer.tiny_config(), "attention": "linear"}))
    summary = train_var.main(["--vqvae", str(vae_dir), "--text-encoder", str(clip_dir), "--config", str(config),
                              "--output-dir", str(out), "--max-steps", "30",
                              "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "5", "--log-every", "5",
                              "--checkpoint-every", "15", "--sample-every", "15"])
    assert summary is not None
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert log[-1]["loss"] < log[0]["loss"]
    assert (out / "samples" / "step-0000015.png").is_file()
    pipe = load_pipeline(VARPipeline, out / "pipeline")
    assert pipe.transformer.config.attention == "linear"
    image = pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    # the final checkpoint's EMA exported as a pipeline equals the one the run saved
    from training import export_pipeline

    export_pipeline.main(["--model", "var", "--config", str(config), "--vqvae", str(vae_dir), "--checkpoint",
                          str(out / "checkpoint-30"), "--text-encoder", str(clip_dir), "--out", str(tmp_path / "x")])
    exported = load_pipeline(VARPipeline, tmp_path / "x")
    again = exported("a red circle", generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert (again == image).all()
    with pytest.raises(SystemExit, match="--vqvae"):
        export_pipeline.main(["--model", "var", "--config", str(config), "--checkpoint", str(out / "checkpoint-30"),
                              "--text-encoder", str(clip_dir), "--out", str(tmp_path / "y")])


def test_train_var_refuses_a_mismatched_tokenizer(tiny_vqvae, tmp_path):
    vae_dir, _ = tiny_vqvae
    clip_dir = tmp_path / "clip"
    CLIPTextEncoder(**CLIPTextEncoder.tiny_config()).save_pretrained(clip_dir, safe_serialization=True)
    config = tmp_path / "var.json"
    from genmodels.var.var import VARTransformer

    config.write_text(json.dumps({**VARTransformer.tiny_config(), "vocab_size": 64}))
    with pytest.raises(SystemExit, match="does not match"):
        train_var.main(["--vqvae", str(vae_dir), "--text-encoder", str(clip_dir), "--config", str(config),
                        "--output-dir", str(tmp_path / "out"), "--max-steps", "1"])
    with pytest.raises(SystemExit, match="not a MultiScaleVQVAE folder"):
        train_var.main(["--vqvae", str(tmp_path), "--text-encoder", str(clip_dir), "--output-dir",
                        str(tmp_path / "out"), "--max-steps", "1"])


def test_a_larger_tokenizer_and_transformer_start_from_the_small_ones(tiny_vqvae, tmp_path):
    """--init: the 32² tokenizer's weights serve 64² images on a longer schedule (--max-steps 0 only evaluates
    and saves them), and a transformer trained on scales 1, 2, 4 starts a model on scales 1, 2, 4, 8."""
    vae_dir, _ = tiny_vqvae
    big = tmp_path / "big.json"
    # three φ convolutions, as the 3-scale tokenizer has (share_phi = min(4, K) by default)
    big.write_text(json.dumps({**MultiScaleVQVAE.tiny_config(), "sample_size": 64, "patch_nums": [1, 2, 4, 8],
                               "share_phi": 3}))
    metrics = train_vqvae.main(["--output-dir", str(tmp_path / "vae64"), "--config", str(big), "--init",
                                str(vae_dir), "--max-steps", "0", "--eval-images", "8"])
    assert metrics["steps"] == 0 and metrics["patch_nums"] == [1, 2, 4, 8]
    small = MultiScaleVQVAE.from_pretrained(vae_dir, use_safetensors=True)
    large = MultiScaleVQVAE.from_pretrained(tmp_path / "vae64", use_safetensors=True)
    assert large.config.sample_size == 64
    for name, tensor in small.state_dict().items():
        if name != "quantize.usage":
            assert torch.equal(large.state_dict()[name], tensor), name
    with pytest.raises(SystemExit, match="--max-steps"):
        train_vqvae.main(["--output-dir", str(tmp_path / "x"), "--config", "tiny", "--max-steps", "0"])
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({**MultiScaleVQVAE.tiny_config(), "latent_channels": 16}))
    with pytest.raises(SystemExit, match="does not fit"):
        train_vqvae.main(["--output-dir", str(tmp_path / "x"), "--config", str(wide), "--init", str(vae_dir),
                          "--max-steps", "0"])

    from genmodels.var.var import VARTransformer

    clip_dir = tmp_path / "clip"
    CLIPTextEncoder(**CLIPTextEncoder.tiny_config()).save_pretrained(clip_dir, safe_serialization=True)
    torch.manual_seed(1)
    trained = VARTransformer(**VARTransformer.tiny_config())
    trained.save_pretrained(tmp_path / "pipe" / "transformer", safe_serialization=True)
    config = tmp_path / "var64.json"
    config.write_text(json.dumps({**VARTransformer.tiny_config(), "patch_nums": [1, 2, 4, 8]}))
    args = ["--vqvae", str(tmp_path / "vae64"), "--text-encoder", str(clip_dir), "--config", str(config),
            "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]
    t = train_var.build(train_var.parse_args([*args, "--init", str(tmp_path / "pipe")]))
    assert t.model.patch_nums == (1, 2, 4, 8)
    assert torch.equal(t.model.head.weight, trained.head.weight)
    assert torch.equal(t.model.pos_embed[0, :21], trained.pos_embed[0])  # scales 1, 2, 4 copied
    with pytest.raises(SystemExit, match="no transformer config.json"):
        train_var.build(train_var.parse_args([*args, "--init", str(tmp_path)]))
    config.write_text(json.dumps({**VARTransformer.tiny_config(), "patch_nums": [1, 2, 4, 8], "width": 96}))
    with pytest.raises(SystemExit, match="does not fit"):
        train_var.build(train_var.parse_args([*args, "--init", str(tmp_path / "pipe")]))


def test_extend_var_schedule_runs_a_trained_pipeline_on_a_longer_schedule(tmp_path):
    from tests.search.helpers import tiny_var_pipeline
    from training import extend_var_schedule

    small = tiny_var_pipeline()
    small.save_pretrained(tmp_path / "small")
    small.vqvae.save_pretrained(tmp_path / "vq32", safe_serialization=True)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**MultiScaleVQVAE.tiny_config(), "sample_size": 64, "patch_nums": [1, 2, 4, 8],
                               "share_phi": 3}))
    train_vqvae.main(["--output-dir", str(tmp_path / "vq64"), "--config", str(big), "--init", str(tmp_path / "vq32"),
                      "--max-steps", "0", "--eval-images", "4"])
    extend_var_schedule.main(["--model", str(tmp_path / "small"), "--vqvae", str(tmp_path / "vq64"),
                              "--out", str(tmp_path / "big")])
    pipe = load_pipeline(VARPipeline, tmp_path / "big")
    assert pipe.transformer.patch_nums == (1, 2, 4, 8) and pipe.default_size == 64
    assert torch.equal(pipe.transformer.head.weight, small.transformer.head.weight)
    image = pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    # a tokenizer with another codebook is refused, and nothing is written
    torch.manual_seed(5)
    MultiScaleVQVAE(**json.loads(big.read_text())).save_pretrained(tmp_path / "other", safe_serialization=True)
    with pytest.raises(SystemExit, match="codebook"):
        extend_var_schedule.main(["--model", str(tmp_path / "small"), "--vqvae", str(tmp_path / "other"),
                                  "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
