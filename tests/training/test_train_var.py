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
