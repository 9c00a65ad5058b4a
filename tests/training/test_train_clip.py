"""training/train_clip.py on a tiny config, and text-conditioned flow training through train_dit."""

from __future__ import annotations

import json
import math

import open_clip
import pytest
import torch

from genmodels.loading import load_pipeline
from genmodels.pipelines.text_to_image import TextToImagePipeline
from genmodels.pipelines.text_to_video import TextToVideoPipeline
from genmodels.sana import SanaDiT
from genmodels.text import CLIPTextEncoder
from training import train_clip, train_dit

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    config = root / "clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.set_num_threads(1)
    metrics = train_clip.main(["--output-dir", str(root / "out"), "--config", str(config), "--image-size", "32",
                               "--max-steps", "120", "--batch-size", "16", "--warmup-steps", "10", "--lr", "3e-3",
                               "--eval-pairs", "40", "--log-every", "1"])
    return root / "out", metrics


def test_train_clip_writes_an_open_clip_folder_with_metrics(tiny_clip):
    folder, metrics = tiny_clip
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["steps"] == 120 and saved["pairs"] == 40
    for key in ("caption_to_image_top1", "caption_to_image_top1_oracle", "image_to_caption_top1"):
        assert 0.0 <= saved[key] <= 1.0
    model = open_clip.create_model(f"local-dir:{folder}")  # open_clip itself reads the folder
    assert model.context_length == 24
    encoder = CLIPTextEncoder.from_open_clip(folder)
    with torch.no_grad():
        reference = model.eval().encode_text(encoder.tokenize(["a red circle"]), normalize=True)
    torch.testing.assert_close(encoder.encode(["a red circle"])[2], reference, rtol=1e-5, atol=1e-6)


def test_train_clip_on_moving_shapes_filmstrips(tmp_path):
    config = tmp_path / "clip64.json"
    config.write_text(json.dumps({**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "image_size": 64,
                                                               "patch_size": 16}}))
    common = ["--config", str(config), "--image-size", "64", "--data", "moving_shapes", "--batch-size", "8",
              "--eval-pairs", "30", "--threads", "1"]
    metrics = train_clip.main([*common, "--output-dir", str(tmp_path / "out"), "--max-steps", "3"])
    assert metrics["steps"] == 3 and metrics["pairs"] == 30 and 0 < metrics["reversed_captions"] <= 30
    for key in ("caption_to_image_top1", "image_to_caption_top1", "true_vs_reversed_direction"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "caption_to_image_top1_oracle" not in metrics  # the still-image oracle does not read clips
    assert CLIPTextEncoder.from_open_clip(tmp_path / "out").encode(["a red circle moves up"])[0].shape[-1] == 32
    negatives = train_clip.main([*common, "--output-dir", str(tmp_path / "neg"), "--max-steps", "2",
                                 "--hard-negatives"])
    assert negatives["steps"] == 2 and 0.0 <= negatives["true_vs_reversed_direction"] <= 1.0
    with pytest.raises(SystemExit, match="for --data shapes"):
        train_clip.main([*common, "--output-dir", str(tmp_path / "x"), "--eval-extra", str(tmp_path / "p.npz")])


def test_train_clip_lowers_the_contrastive_loss(tiny_clip):
    folder, _ = tiny_clip
    log = [json.loads(line) for line in folder.with_name("out.log.jsonl").read_text().splitlines()]
    first, last = log[0]["loss"], sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 0.2 and last < math.log(16) - 0.1, (first, last)  # chance: ln 16


def test_train_clip_rejects_a_config_for_another_image_size(tmp_path):
    config = tmp_path / "clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    with pytest.raises(SystemExit, match="image_size"):
        train_clip.main(["--output-dir", str(tmp_path / "out"), "--config", str(config), "--image-size", "64"])
    assert not (tmp_path / "out").exists()


def test_word_targets_mark_the_words_each_caption_holds():
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    ids = tokenizer(["a red circle and a red square", "red"])
    target = train_clip.word_targets(ids, 49408)
    assert target.sum(-1).tolist() == [5, 1]  # a, red, circle, and, square
    red, a = tokenizer.encode("red")[0], tokenizer.encode("a")[0]
    assert target[0, red] == target[0, a] == target[1, red] == 1 and target[1, a] == 0
    assert target[:, [0, tokenizer.sot_token_id, tokenizer.eot_token_id]].sum() == 0  # no padding, <start>, <end>


def _locked_fine_tune_args(folder) -> list[str]:
    """train_clip arguments fine-tuning the tiny CLIP in ``folder`` with its image tower locked."""
    return ["--config", str(folder.parent / "clip.json"), "--image-size", "32", "--batch-size", "16",
            "--eval-pairs", "20", "--threads", "1", "--init", str(folder), "--lock-image"]


@pytest.mark.slow
def test_the_word_loss_separates_words_the_contrastive_loss_merges(tiny_clip, tmp_path):
    """Fine-tune the tiny CLIP's text tower with the bag-of-words loss, image tower locked: shape swaps and
    relation swaps ("to the left of" / "to the right of") move apart (pooled cosine falls), the word loss
    falls, the image tower is bit-identical, and metrics report how far the text embedding moved."""
    folder, _ = tiny_clip
    common = _locked_fine_tune_args(folder)
    metrics = train_clip.main([*common, "--output-dir", str(tmp_path / "words"), "--max-steps", "200",
                               "--word-loss", "3", "--lr", "3e-3", "--warmup-steps", "5", "--log-every", "1"])
    start = train_clip.main([*common, "--evaluate-only"])["caption_sensitivity"]
    after = metrics["caption_sensitivity"]
    # the tiny CLIP (120 contrastive steps) merges shapes (0.997) and relations (1.000); measured after: 0.72, 0.98
    assert after["shape"]["pooled_cosine"] < start["shape"]["pooled_cosine"] - 0.1, (start, after)
    assert after["relation"]["pooled_cosine"] < start["relation"]["pooled_cosine"] - 0.01, (start, after)
    assert metrics["word_loss_weight"] == 3 and metrics["lock_image"] is True
    assert 0 < metrics["pooled_cosine_to_init"] < 0.999
    log = [json.loads(line) for line in (tmp_path / "words.log.jsonl").read_text().splitlines()]
    assert sum(r["word_loss"] for r in log[-5:]) / 5 < log[0]["word_loss"] - 1.0
    from safetensors.torch import load_file

    old, new = (load_file(str(f / "open_clip_model.safetensors")) for f in (folder, tmp_path / "words"))
    for key in old:
        if key.startswith("visual."):
            assert torch.equal(old[key], new[key]), key
    assert not torch.equal(old["token_embedding.weight"], new["token_embedding.weight"])


@pytest.mark.slow
def test_layout_captions_with_the_word_loss_separate_place_words(tiny_clip, tmp_path):
    """--layout-share: scenes captioned by their layout captions ("small red circle top left, ..."); with the
    bag-of-words loss the place words ("top left" / "bottom right") move apart in the pooled embedding."""
    folder, _ = tiny_clip
    common = _locked_fine_tune_args(folder)
    metrics = train_clip.main([*common, "--output-dir", str(tmp_path / "places"), "--max-steps", "150",
                               "--word-loss", "3", "--lr", "3e-3", "--warmup-steps", "5", "--layout-share", "1"])
    start = train_clip.main([*common, "--evaluate-only"])["caption_sensitivity"]["place"]["pooled_cosine"]
    assert metrics["caption_sensitivity"]["place"]["pooled_cosine"] < start - 0.02, (start, metrics)
    for bad in (["--layout-share", "2"], ["--data", "moving_shapes", "--layout-share", "0.5"]):
        with pytest.raises(SystemExit, match="layout-share|layout_share"):
            train_clip.main([*common, "--output-dir", str(tmp_path / "x"), *bad])


@pytest.mark.parametrize("flags, message", [(["--word-loss", "-1"], "--word-loss"),
                                            (["--word-loss", "1", "--word-head-lr", "0"], "--word-head-lr"),
                                            (["--lock-image"], "needs --init")])
def test_train_clip_refuses_impossible_word_loss_flags(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        train_clip.main(["--output-dir", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_train_dit_trains_sana_on_shapes_with_text_and_saves_a_pipeline(tiny_clip, tmp_path):
    folder, _ = tiny_clip
    out = tmp_path / "run"
    summary = train_dit.main(["--model", "sana", "--config", "tiny", "--dataset", "shapes",
                              "--dataset-args", '{"size": 32}', "--text-encoder", str(folder),
                              "--output-dir", str(out), "--max-steps", "3", "--batch-size", "4",
                              "--checkpoint-every", "3", "--log-every", "1", "--threads", "1"])
    assert summary["step"] == 3
    pipe = load_pipeline(TextToImagePipeline, out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    assert pipe.config.prompt_planner is None  # short captions: prompts are used as given
    # the pipeline's text encoder is the trained CLIP's text tower
    torch.testing.assert_close(pipe.text_encoder.encode(["a circle"])[2],
                               CLIPTextEncoder.from_open_clip(folder).encode(["a circle"])[2])


def test_train_dit_on_layout_captions_saves_a_planning_pipeline_and_export_can_too(tiny_clip, tmp_path):
    from training import export_pipeline

    folder, _ = tiny_clip
    out = tmp_path / "run"
    train_dit.main(["--model", "sana", "--config", "tiny", "--dataset", "shapes", "--dataset-args",
                    '{"size": 32, "layout_share": 0.75}', "--text-encoder", str(folder), "--output-dir", str(out),
                    "--max-steps", "1", "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1"])
    pipe = load_pipeline(TextToImagePipeline, out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.prompt_planner == "shapes_layout"
    planned = pipe("two circles", num_inference_steps=1, generator=torch.Generator().manual_seed(0)).prompts[0]
    assert planned.count("circle") == 2 and "," in planned
    checkpoint = next(out.glob("checkpoint-*"))
    common = ["--checkpoint", str(checkpoint), "--config", "tiny", "--text-encoder", str(folder),
              "--sample-size", "32"]
    export_pipeline.main([*common, "--prompt-planner", "shapes_layout", "--out", str(tmp_path / "exported")])
    assert load_pipeline(TextToImagePipeline, tmp_path / "exported").config.prompt_planner == "shapes_layout"
    export_pipeline.main([*common, "--out", str(tmp_path / "plain")])
    assert load_pipeline(TextToImagePipeline, tmp_path / "plain").config.prompt_planner is None


def test_train_dit_fine_tunes_a_pruned_fp16_pipeline_from_its_weights(tiny_clip, tmp_path):
    """--init: the architecture and weights come from a (pruned, half-precision) pipeline folder; with a zero
    learning rate the fine-tune saves exactly those weights back, in float32."""
    from safetensors.torch import load_file

    from training import prune_pipeline

    folder, _ = tiny_clip
    common = ["--model", "sana", "--dataset", "shapes", "--dataset-args", '{"size": 32}', "--text-encoder",
              str(folder), "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1"]
    train_dit.main([*common, "--config", "tiny", "--output-dir", str(tmp_path / "run"), "--max-steps", "1"])
    prune_pipeline.main(["--model", str(tmp_path / "run" / "pipeline"), "--remove", "1", "--out",
                         str(tmp_path / "pruned"), "--fp16"])
    pruned = load_pipeline(TextToImagePipeline, tmp_path / "pruned").transformer
    train_dit.main([*common, "--init", str(tmp_path / "pruned"), "--output-dir", str(tmp_path / "tuned"),
                    "--max-steps", "1", "--lr", "0", "--weight-decay", "0"])
    tuned = load_file(tmp_path / "tuned" / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors")
    expected = {k: v.float() for k, v in pruned.state_dict().items()}
    assert tuned.keys() == expected.keys() and len(pruned.blocks) == SanaDiT.tiny_config()["depth"] - 1
    for key, value in tuned.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    with pytest.raises(SystemExit, match="drop --config"):
        train_dit.main([*common, "--init", str(tmp_path / "pruned"), "--config", "tiny",
                        "--output-dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not a HDiT|no model"):
        train_dit.main([*common[:1], "hdit", *common[2:], "--init", str(tmp_path / "pruned"),
                        "--output-dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no model"):
        train_dit.main([*common, "--init", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")])


def test_train_dit_refuses_a_text_encoder_of_the_wrong_width(tiny_clip, tmp_path):
    folder, _ = tiny_clip
    with pytest.raises(SystemExit, match="text_dim"):
        train_dit.main(["--model", "sana", "--config", "shapes", "--dataset", "shapes", "--text-encoder",
                        str(folder), "--output-dir", str(tmp_path / "run"), "--max-steps", "1"])


def test_train_dit_trains_dim_on_moving_shapes_and_saves_a_video_pipeline(tiny_clip, tmp_path):
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    folder, _ = tiny_clip
    out = tmp_path / "run"
    summary = train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "moving_shapes",
                              "--dataset-args", '{"size": 32, "frames": 8}', "--text-encoder", str(folder),
                              "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2", "--flow-shift", "1",
                              "--given-frames-prob", "0.5", "--one-frame-share", "0.5", "--checkpoint-every", "2",
                              "--sample-every", "2", "--log-every", "1", "--threads", "1"])
    assert summary["step"] == 2
    assert (out / "samples" / "step-0000002.png").is_file()
    pipe = load_pipeline(TextToVideoPipeline, out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.num_frames == 8 and pipe.transformer.config.sample_size == 32
    assert pipe.scheduler.config.flow_shift == 1.0  # sampling repeats the training shift
    given = torch.zeros(3, 32, 32, 3, dtype=torch.uint8).numpy()
    clip = pipe("a red circle moves up", num_inference_steps=2, first_frames=given,
                generator=torch.Generator().manual_seed(0)).frames
    assert clip.shape == (1, 8, 32, 32, 3) and (clip[0, :3] == 0).all()


@pytest.mark.parametrize("flag, value", [("--given-frames-prob", "1.5"), ("--one-frame-share", "-0.1")])
def test_train_dit_refuses_an_impossible_prefix_probability(tiny_clip, tmp_path, flag, value):
    folder, _ = tiny_clip
    with pytest.raises(SystemExit, match=flag):
        train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "moving_shapes", "--text-encoder",
                        str(folder), "--output-dir", str(tmp_path / "run"), "--max-steps", "1", flag, value])
    assert not any((tmp_path / "run").iterdir())  # no checkpoint, no log: only the checked empty folder


def test_init_config_adds_a_zero_initialised_part_to_a_trained_model(tiny_clip, tmp_path):
    folder, _ = tiny_clip
    common = ["--model", "dim", "--dataset", "moving_shapes", "--dataset-args", '{"size": 32, "frames": 8}',
              "--text-encoder", str(folder), "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1",
              "--max-steps", "1"]
    train_dit.main([*common, "--config", "tiny", "--output-dir", str(tmp_path / "run")])
    before = load_pipeline(TextToVideoPipeline, tmp_path / "run" / "pipeline").transformer
    train_dit.main([*common, "--init", str(tmp_path / "run" / "pipeline"), "--init-config", '{"token_pool": true}',
                    "--lr", "0", "--weight-decay", "0", "--output-dir", str(tmp_path / "pooled")])
    after = load_pipeline(TextToVideoPipeline, tmp_path / "pooled" / "pipeline").transformer
    assert after.config.token_pool and not before.config.token_pool
    old = before.state_dict()
    for key, value in after.state_dict().items():  # the trained weights kept, the new part still zero
        if key.startswith("text_pool."):
            assert not value.any()
        else:
            torch.testing.assert_close(value.float(), old[key].float(), rtol=0, atol=0)
    init = str(tmp_path / "run" / "pipeline")
    for extra, match in ((["--init-config", '{"no_such_key": 1}'], "no config key no_such_key"),
                         (["--init-config", "[1]"], "non-empty JSON object"),
                         (["--init-config", "{"], "not valid JSON")):
        with pytest.raises(SystemExit, match=match):
            train_dit.main([*common, "--init", init, *extra, "--output-dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="give --init"):
        train_dit.main([*common, "--config", "tiny", "--init-config", '{"token_pool": true}',
                        "--output-dir", str(tmp_path / "x")])


def test_train_text_encoder_trains_the_caption_encoder_with_the_model(tiny_clip, tmp_path):
    from safetensors.torch import load_file

    from training import export_pipeline

    folder, _ = tiny_clip
    out = tmp_path / "run"
    train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "moving_shapes", "--dataset-args",
                    '{"size": 32, "frames": 8}', "--text-encoder", str(folder), "--train-text-encoder",
                    "--text-lr-scale", "2", "--output-dir", str(out), "--max-steps", "3", "--batch-size", "2",
                    "--lr", "1e-3", "--weight-decay", "0", "--text-drop-prob", "0", "--checkpoint-every", "3",
                    "--sample-every", "3", "--threads", "1"])
    base = CLIPTextEncoder.from_open_clip(folder).state_dict()
    pipe = load_pipeline(TextToVideoPipeline, out / "pipeline")
    trained = pipe.text_encoder.state_dict()
    assert set(trained) == set(base)
    moved = {k for k in base if not torch.equal(trained[k].float(), base[k].float())}
    # the whole tower learned from the flow loss (no weight decay: every change is a gradient step), the
    # embedding only in the rows of the words seen (the model's zero-initialised text path passes gradients
    # to the encoder from the third step)
    assert moved == set(base)
    rows = (trained["token_embedding.weight"] != base["token_embedding.weight"]).any(dim=1)
    assert 0 < int(rows.sum()) < 200
    ema = load_file(str(out / "checkpoint-3" / "ema.safetensors"))
    assert any(k.startswith("text_encoder.") for k in ema) and any(k.startswith("transformer.") for k in ema)
    # an intermediate checkpoint exports with its trained encoder; --text-encoder names the starting one
    export_pipeline.main(["--model", "dim", "--config", "tiny", "--sample-size", "32", "--checkpoint",
                          str(out / "checkpoint-3"), "--text-encoder", str(folder), "--out", str(tmp_path / "x")])
    exported = load_pipeline(TextToVideoPipeline, tmp_path / "x")
    for key, value in exported.text_encoder.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    for key, value in exported.transformer.state_dict().items():
        torch.testing.assert_close(value, pipe.transformer.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(SystemExit, match="needs --text-encoder"):
        train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "moving_shapes", "--train-text-encoder",
                        "--output-dir", str(tmp_path / "y"), "--max-steps", "1"])
    with pytest.raises(SystemExit, match="--text-lr-scale"):
        train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "moving_shapes", "--text-encoder",
                        str(folder), "--train-text-encoder", "--text-lr-scale", "0", "--output-dir",
                        str(tmp_path / "y"), "--max-steps", "1"])


def test_text_trained_model_groups_and_state_split():
    from genmodels.dim import DiffusionMamba
    from genmodels.text import TextTrainedModel, unwrap_text_trained

    encoder = CLIPTextEncoder(**CLIPTextEncoder.tiny_config())
    transformer = DiffusionMamba(**DiffusionMamba.tiny_config())
    pair = TextTrainedModel(transformer, encoder, text_lr_scale=0.25)
    assert all(p.requires_grad for p in encoder.parameters())
    groups = pair.param_groups(1e-3, weight_decay=0.1)
    text = [g for g in groups if g["name"].startswith("text")]
    assert {g["lr"] for g in text} == {0.25e-3}
    assert sum(len(g["params"]) for g in groups) == len(list(pair.parameters()))
    assert [g["weight_decay"] for g in text] == [0.1, 0.0]
    assert unwrap_text_trained(pair) == (transformer, encoder)
    assert unwrap_text_trained(transformer) == (transformer, None)
    ids = encoder.tokenize(["a red circle moves left"])
    tokens, _, pooled = unwrap_text_trained(pair)[1].encode(["a red circle moves left"])
    (tokens.sum() + pooled.sum()).backward()
    assert encoder.token_embedding.weight.grad[ids[0]].abs().sum() > 0
    parts = TextTrainedModel.split_state_dict(pair.state_dict())
    assert parts[0].keys() == transformer.state_dict().keys() and parts[1].keys() == encoder.state_dict().keys()
    with pytest.raises(KeyError, match="neither"):
        TextTrainedModel.split_state_dict({"other.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="text_lr_scale"):
        TextTrainedModel(transformer, encoder, text_lr_scale=0)


def test_train_dit_trains_dim_on_shapes_images(tiny_clip, tmp_path):
    from genmodels.dim import DiffusionMamba

    folder, _ = tiny_clip
    out = tmp_path / "run"
    train_dit.main(["--model", "dim", "--config", "tiny", "--dataset", "shapes", "--dataset-args", '{"size": 32}',
                    "--text-encoder", str(folder), "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2",
                    "--checkpoint-every", "2", "--log-every", "1", "--threads", "1"])
    pipe = load_pipeline(TextToImagePipeline, out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.transformer, DiffusionMamba)
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_false_specs_are_false_of_every_clean_render():
    """The hard negatives (NegCLIP) are provably wrong captions: none holds on the rendered scene."""
    import numpy as np

    from genmodels.data.shapes import ShapesDataset, caption_for, false_spec, parse_caption
    from genmodels.eval.shapes_oracle import score

    data = ShapesDataset("train", size=64, length=300, seed=3)
    rng = np.random.default_rng(0)
    made = 0
    for i in range(len(data)):
        item = data[i]
        spec = json.loads(item["spec"])
        negative = false_spec(spec, rng)
        if negative is None:
            assert spec["category"] == "two_objects"
            continue
        made += 1
        image = ((item["pixel_values"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        assert score(image, spec) and not score(image, negative), (spec, negative)
        assert parse_caption(caption_for(negative, rng))["category"] == spec["category"]
    assert made > 200


def test_hard_negative_fine_tuning_from_a_folder(tiny_clip, tmp_path):
    folder, _ = tiny_clip
    config = tmp_path / "clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    metrics = train_clip.main(["--output-dir", str(tmp_path / "neg"), "--config", str(config), "--image-size", "32",
                               "--max-steps", "3", "--batch-size", "8", "--warmup-steps", "1", "--eval-pairs", "20",
                               "--hard-negatives", "--init", str(folder)])
    assert metrics["steps"] == 3 and 0.0 <= metrics["true_vs_false_caption"] <= 1.0 and metrics["false_captions"] > 0
    # --init really starts from the folder: one step at a negligible rate reproduces its retrieval figures
    same = train_clip.main(["--output-dir", str(tmp_path / "same"), "--config", str(config), "--image-size", "32",
                            "--max-steps", "1", "--batch-size", "8", "--warmup-steps", "0", "--lr", "1e-12",
                            "--eval-pairs", "40", "--init", str(folder)])
    saved = json.loads((folder / "metrics.json").read_text())
    for key in ("caption_to_image_top1", "caption_to_image_top1_oracle", "image_to_caption_top1"):
        assert same[key] == saved[key]
    # --evaluate-only reports the folder's own figures and writes nothing
    evaluated = train_clip.main(["--config", str(config), "--image-size", "32", "--eval-pairs", "40",
                                 "--init", str(folder), "--evaluate-only"])
    for key in ("caption_to_image_top1", "caption_to_image_top1_oracle", "true_vs_false_caption"):
        assert evaluated[key] == saved[key]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "neg", "neg.log.jsonl", "same",
                                                          "same.log.jsonl"]
    with pytest.raises(SystemExit, match="needs --init"):
        train_clip.main(["--evaluate-only"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_CLIP, "embed_dim": 16}))
    with pytest.raises(SystemExit, match="differs"):
        train_clip.main(["--output-dir", str(tmp_path / "x"), "--config", str(other), "--image-size", "32",
                         "--init", str(folder)])


def test_verifier_pairs_are_sdedited_renders_with_their_own_captions_and_train_a_clip(tiny_clip, tmp_path):
    """make_verifier_data redraws renders with a real (tiny) text-to-image model and keeps each render's caption
    and spec; train_clip mixes them into its batches and reports true-vs-false on a held-out set of them."""
    import numpy as np

    from genmodels.data.shapes import ShapesDataset
    from training import make_verifier_data

    folder, _ = tiny_clip
    train_dit.main(["--model", "sana", "--config", "tiny", "--dataset", "shapes", "--dataset-args", '{"size": 32}',
                    "--text-encoder", str(folder), "--output-dir", str(tmp_path / "sana"), "--max-steps", "1",
                    "--batch-size", "2", "--checkpoint-every", "1", "--threads", "1"])
    args = ["--model", str(tmp_path / "sana" / "pipeline"), "--count", "6", "--batch", "4", "--steps", "4",
            "--seed", "3", "--strength", "0.5", "0.75"]
    summary = make_verifier_data.main([*args, "--out", str(tmp_path / "pairs.npz")])
    pairs = make_verifier_data.load_pairs(tmp_path / "pairs.npz")
    runs = [max(1, round(float(pairs["strengths"][i]) * 4)) for i in (0, 4)]  # strength · steps, per batch
    assert summary["count"] == 6 and summary["nfe"] == 4 * runs[0] + 2 * runs[1]
    renders = ShapesDataset("train", size=32, length=6, seed=3)
    assert pairs["images"].shape == (6, 32, 32, 3) and pairs["images"].dtype == np.uint8
    assert list(pairs["captions"]) == [renders[i]["caption"] for i in range(6)]
    assert list(pairs["specs"]) == [renders[i]["spec"] for i in range(6)]
    assert ((pairs["strengths"] >= 0.5) & (pairs["strengths"] <= 0.75)).all()
    assert pairs["strengths"][0] == pairs["strengths"][3] != pairs["strengths"][4]  # one t₀ per batch of 4
    original = np.stack([((renders[i]["pixel_values"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                         for i in range(6)])
    assert (pairs["images"] != original).any()  # redrawn, not copied
    again = make_verifier_data.main([*args, "--out", str(tmp_path / "again.npz")])  # reproducible
    assert again["count"] == 6 and np.array_equal(make_verifier_data.load_pairs(tmp_path / "again.npz")["images"],
                                                  pairs["images"])

    config = tmp_path / "clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    metrics = train_clip.main(["--output-dir", str(tmp_path / "gen"), "--config", str(config), "--image-size", "32",
                               "--max-steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--eval-pairs", "20",
                               "--hard-negatives", "--init", str(folder), "--extra-pairs", str(tmp_path / "pairs.npz"),
                               "--eval-extra", str(tmp_path / "again.npz")])
    assert metrics["extra_fraction"] == 0.5 and 0.0 <= metrics["true_vs_false_caption_extra"] <= 1.0
    assert metrics["false_captions_extra"] > 0


def test_mix_in_replaces_the_tail_of_a_batch_with_extra_pairs():
    import numpy as np

    batch = {"pixel_values": torch.zeros(8, 3, 4, 4), "caption": [f"c{i}" for i in range(8)],
             "spec": [f"s{i}" for i in range(8)]}
    extra = [{"pixel_values": torch.ones(3, 4, 4), "caption": "x", "spec": "sx"}]
    mixed = train_clip.mix_in(batch, extra, 0.25, np.random.default_rng(0))
    assert mixed["caption"] == [f"c{i}" for i in range(6)] + ["x", "x"] and mixed["spec"][-1] == "sx"
    assert mixed["pixel_values"][:6].eq(0).all() and mixed["pixel_values"][6:].eq(1).all()
    assert train_clip.mix_in(batch, extra, 0.0, np.random.default_rng(0)) is batch


def test_verifier_pairs_reject_a_file_that_is_not_one(tmp_path):
    import numpy as np

    from training import make_verifier_data

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a verifier-pairs"):
        make_verifier_data.load_pairs(bad)
    np.savez(tmp_path / "partial.npz", images=np.zeros((2, 8, 8, 3), np.uint8), captions=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="missing"):
        make_verifier_data.load_pairs(tmp_path / "partial.npz")
    with pytest.raises(SystemExit, match="not a verifier-pairs"):
        train_clip.main(["--output-dir", str(tmp_path / "out"), "--extra-pairs", str(bad)])
    assert not (tmp_path / "out").exists()


def test_train_dit_trains_and_exports_a_layout_conditioned_video_model(tiny_clip, tmp_path):
    import json

    from genmodels.dim import DiffusionMamba
    from training import export_pipeline

    folder, _ = tiny_clip
    config = tmp_path / "layout.json"
    config.write_text(json.dumps({**DiffusionMamba.tiny_config(), "layout_conditioning": True}))
    common = ["--model", "dim", "--dataset", "moving_shapes", "--text-encoder", str(folder), "--max-steps", "3",
              "--batch-size", "2", "--lr", "1e-3", "--weight-decay", "0", "--threads", "1"]
    laid = ["--dataset-args", '{"size": 32, "frames": 8, "layout": true}']
    out = tmp_path / "run"
    train_dit.main([*common, *laid, "--config", str(config), "--output-dir", str(out), "--checkpoint-every", "3",
                    "--sample-every", "3", "--layout-drop-prob", "0"])
    pipe = load_pipeline(TextToVideoPipeline, out / "pipeline")
    assert pipe.config.layout_planner == "moving_shapes"
    layout = pipe.transformer.layout_embedder
    assert layout.position.weight.abs().sum() > 0 and layout.phrase[2].weight.abs().sum() > 0  # it trained
    pipe.set_progress_bar_config(disable=True)
    result = pipe("a red circle moves left", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert result.layouts[0].phrases == ("a red circle",) and result.frames.shape == (1, 8, 32, 32, 3)
    export_pipeline.main(["--model", "dim", "--config", str(config), "--sample-size", "32", "--checkpoint",
                          str(out / "checkpoint-3"), "--text-encoder", str(folder), "--layout-planner",
                          "moving_shapes", "--out", str(tmp_path / "x")])
    assert load_pipeline(TextToVideoPipeline, tmp_path / "x").config.layout_planner == "moving_shapes"
    with pytest.raises(SystemExit, match="does not match the config"):  # the layout weights need their config
        export_pipeline.main(["--model", "dim", "--config", "tiny", "--checkpoint", str(out / "checkpoint-3"),
                              "--text-encoder", str(folder), "--layout-planner", "moving_shapes",
                              "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="no layout_conditioning"):
        train_dit.main([*common, *laid, "--config", "tiny", "--output-dir", str(tmp_path / "z")])
    with pytest.raises(SystemExit, match="--layout-drop-prob"):
        train_dit.main([*common, *laid, "--config", str(config), "--layout-drop-prob", "2",
                        "--output-dir", str(tmp_path / "z")])
