"""Export a training checkpoint's EMA weights as a text-to-image or text-to-video pipeline folder.

    python training/export_pipeline.py --checkpoint runs/shapes-sana-crosswkv/checkpoint-600 \\
        --config runs/shapes-sana-crosswkv.config.json --text-encoder assets/clip-shapes --out runs/sana-600 [--fp16]
    python training/export_pipeline.py --model dim --config moving_shapes --sample-size 32 --flow-shift 1 \\
        --checkpoint runs/moving-shapes-dim/checkpoint-3000 --text-encoder assets/clip-shapes --out DIR --fp16

A model with ``num_frames`` > 1 in its config becomes a :class:`TextToVideoPipeline`, any other a
:class:`TextToImagePipeline`; ``--model var --vqvae FOLDER`` makes a :class:`VARPipeline` (transformer from the
checkpoint, the frozen tokenizer it was trained on):

    python training/export_pipeline.py --model var --config runs/shapes-var-softmax.config.json \
        --vqvae assets/shapes-vqvae --checkpoint runs/shapes-var-softmax/checkpoint-1000 \
        --text-encoder assets/clip-shapes --out DIR

``train_dit`` writes the pipeline only at the end of a run; this reads any ``checkpoint-N`` folder (its
``ema.safetensors``, never a pickle) so intermediate points of a run can be evaluated or shipped. The output
folder is written atomically. A checkpoint of a run with ``--train-text-encoder`` holds the trained text encoder
too: ``--text-encoder`` then names the encoder the run started from (its architecture), and the exported
pipeline gets the trained weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from genmodels.diffusion.flow import make_flow_scheduler  # noqa: E402
from genmodels.io import replace_dir_atomic  # noqa: E402
from genmodels.models import build_model  # noqa: E402
from genmodels.pipelines.text_to_image import TextToImagePipeline  # noqa: E402
from genmodels.pipelines.text_to_video import TextToVideoPipeline  # noqa: E402
from genmodels.text.joint import TextTrainedModel  # noqa: E402
from training.checkpoint import EMA_FILE  # noqa: E402
from training.train_dit import load_text_encoder  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint-N folder with ema.safetensors")
    p.add_argument("--model", default="sana")
    p.add_argument("--config", required=True, help="the model config the run was trained with (name or JSON)")
    p.add_argument("--text-encoder", required=True, help="open_clip or diffusers text-encoder folder")
    p.add_argument("--sample-size", type=int, default=64)
    p.add_argument("--vqvae", default=None, help="--model var: the MultiScaleVQVAE folder the run trained on")
    p.add_argument("--flow-shift", type=float, default=1.0, help="the time shift training used (sampling repeats it)")
    p.add_argument("--prompt-planner", default=None, choices=["shapes_layout"],
                   help="the model was trained on layout captions: the pipeline plans prompts (TextToImagePipeline)")
    p.add_argument("--layout-planner", default=None, choices=["moving_shapes"],
                   help="the video model was trained on layouts (layout_conditioning): the pipeline plans them")
    p.add_argument("--out", required=True)
    p.add_argument("--fp16", action="store_true", help="store half-precision weights (they load as float32)")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    ema_path = Path(args.checkpoint) / EMA_FILE
    if not ema_path.is_file():
        raise SystemExit(f"{args.checkpoint} has no {EMA_FILE}")
    var = args.model == "var"
    if var and not (args.vqvae and (Path(args.vqvae) / "config.json").is_file()):
        raise SystemExit("--model var needs --vqvae FOLDER (a MultiScaleVQVAE folder)")
    model = build_model(args.model, args.config, **({} if var else {"sample_size": args.sample_size}))
    state, text_state = load_file(str(ema_path)), None
    if any(key.startswith("text_encoder.") for key in state):  # trained with --train-text-encoder
        state, text_state = TextTrainedModel.split_state_dict(state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{ema_path} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    text_encoder = load_text_encoder(args.text_encoder)
    if text_state is not None:
        try:
            text_encoder.load_state_dict(text_state)
        except RuntimeError as err:
            raise SystemExit(f"{ema_path}: its trained text encoder does not match {args.text_encoder}: {err}") \
                from err
    if var:
        from genmodels.pipelines.var import VARPipeline
        from genmodels.var.vqvae import MultiScaleVQVAE

        vqvae = MultiScaleVQVAE.from_pretrained(args.vqvae, use_safetensors=True)
        pipe = VARPipeline(transformer=model.eval(), vqvae=vqvae, text_encoder=text_encoder)
    else:
        video = getattr(model.config, "num_frames", 1) > 1
        if video and args.prompt_planner:
            raise SystemExit("--prompt-planner is for text-to-image models")
        if args.layout_planner and not (video and getattr(model.config, "layout_conditioning", False)):
            raise SystemExit("--layout-planner needs a video model config with layout_conditioning")
        pipeline_class = TextToVideoPipeline if video else TextToImagePipeline
        extra = {"prompt_planner": args.prompt_planner} if args.prompt_planner else {}
        if args.layout_planner:
            extra["layout_planner"] = args.layout_planner
        pipe = pipeline_class(transformer=model.eval(),
                              scheduler=make_flow_scheduler("dpmsolver++", shift=args.flow_shift),
                              text_encoder=text_encoder, **extra)
    with replace_dir_atomic(args.out) as tmp:
        (pipe.to(torch.float16) if args.fp16 else pipe).save_pretrained(tmp)
    print(f"wrote {args.out}")
    return Path(args.out)


if __name__ == "__main__":
    main()
