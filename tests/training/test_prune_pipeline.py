"""training/prune_pipeline.py: SANA 1.5 depth pruning of a saved text-to-image pipeline."""

from __future__ import annotations

import torch

from genmodels.loading import load_pipeline
from genmodels.pipelines.text_to_image import TextToImagePipeline
from tests.search.helpers import tiny_text_to_image_pipeline
from training import prune_pipeline


def test_prune_pipeline_drops_the_least_important_blocks_and_saves_a_working_pipeline(tmp_path):
    pipe = tiny_text_to_image_pipeline()
    with torch.no_grad():  # make the blocks differ from the identity by different amounts
        for i, block in enumerate(pipe.transformer.blocks):
            for p in block.parameters():
                p.add_(torch.randn_like(p) * 0.05 * (i + 1))
    pipe.save_pretrained(tmp_path / "full")
    full = load_pipeline(TextToImagePipeline, tmp_path / "full")
    removed, importance = prune_pipeline.prune_pipeline(full, 1, side=32)
    assert removed == [int(importance.argmin())] and full.transformer.config.depth == 1

    prune_pipeline.main(["--model", str(tmp_path / "full"), "--remove", "1", "--out", str(tmp_path / "pruned"),
                         "--fp16"])
    pruned = load_pipeline(TextToImagePipeline, tmp_path / "pruned")
    assert pruned.transformer.config.depth == 1 and pruned.transformer.dtype == torch.float32
    pruned.set_progress_bar_config(disable=True)
    image = pruned("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
