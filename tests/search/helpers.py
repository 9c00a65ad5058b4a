"""Tiny random models for the search tests: text-to-image and text-to-video pipelines, an open_clip CLIP with a
32×32 tower."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}


def tiny_text_to_image_pipeline():
    """SanaDiT tiny (32×32) + DPM-Solver++ flow scheduler + tiny CLIP text encoder, random weights (seed 0)."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_image import TextToImagePipeline
    from genmodels.sana import SanaDiT
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    pipe = TextToImagePipeline(transformer=SanaDiT(**SanaDiT.tiny_config()),
                               scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_var_pipeline(**transformer_overrides):
    """VARTransformer tiny + MultiScaleVQVAE tiny (32×32, scales 1, 2, 4) + tiny CLIP text encoder, random weights
    (seed 0)."""
    from genmodels.pipelines.var import VARPipeline
    from genmodels.text import CLIPTextEncoder
    from genmodels.var.var import VARTransformer
    from genmodels.var.vqvae import MultiScaleVQVAE

    torch.manual_seed(0)
    pipe = VARPipeline(transformer=VARTransformer(**{**VARTransformer.tiny_config(), **transformer_overrides}),
                       vqvae=MultiScaleVQVAE(**MultiScaleVQVAE.tiny_config()),
                       text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_open_clip(folder: Path) -> Path:
    """A random ``open_clip.CLIP`` (32×32 vision tower) in open_clip's local-folder layout."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=TINY_CLIP_CFG["embed_dim"], vision_cfg=TINY_CLIP_CFG["vision_cfg"],
                           text_cfg=TINY_CLIP_CFG["text_cfg"])
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    preprocess = {"size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG,
                                                              "preprocess_cfg": preprocess}))
    return folder


def tiny_text_to_video_pipeline(sample_size: int = 32, num_frames: int = 8, layout_planner: str | None = None):
    """DiffusionMamba tiny (patch 4, width 64, depth 2, frame conditioning) at ``sample_size`` px and
    ``num_frames`` frames (default 32 px × 8, the moving-shapes world's clips, so the oracle can read them) +
    DPM-Solver++ + tiny CLIP text encoder; random weights (seed 0) nudged so the velocity field is not trivial.
    ``layout_planner``: a layout-conditioned model with that planner."""
    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.dim import DiffusionMamba
    from genmodels.pipelines.text_to_video import TextToVideoPipeline
    from genmodels.text import CLIPTextEncoder

    torch.manual_seed(0)
    model = DiffusionMamba(**{**DiffusionMamba.tiny_config(), "sample_size": sample_size, "num_frames": num_frames,
                              "layout_conditioning": layout_planner is not None})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = TextToVideoPipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++"),
                               text_encoder=CLIPTextEncoder(**CLIPTextEncoder.tiny_config()),
                               layout_planner=layout_planner)
    pipe.set_progress_bar_config(disable=True)
    return pipe
