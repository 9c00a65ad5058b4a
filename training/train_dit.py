"""Train a diffusion backbone: ``accelerate launch training/train_dit.py --model hdit --dataset pianoroll ...``

Thin on purpose: parse arguments, build the model, dataset and objective, then hand over to
:func:`training.loop.train`. Runs as a plain script on one CPU as well (``python training/train_dit.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.data import build_dataset  # noqa: E402
from genmodels.diffusion.edm import SigmaSampler  # noqa: E402
from genmodels.diffusion.flow import FlowObjective  # noqa: E402
from genmodels.diffusion.objectives import EDMObjective, TextConditioned  # noqa: E402
from genmodels.models import build_model, model_entry  # noqa: E402
from genmodels.text.joint import TextTrainedModel, unwrap_text_trained  # noqa: E402
from training.loop import TrainConfig, Training, start_script, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="backbone family (hdit, sana, dim)")
    p.add_argument("--config", default=None,
                   help="named model config (tiny, pianoroll, ...) or a JSON file (default: tiny)")
    p.add_argument("--init", default=None, metavar="FOLDER",
                   help="start from trained weights: a pipeline folder (its transformer/) or a model folder, "
                        "safetensors only; the architecture is the folder's config (fine-tune a pruned model)")
    p.add_argument("--init-config", default=None, metavar="JSON",
                   help="with --init: config keys to change, as a JSON object, for a part added to the trained "
                        "model (e.g. '{\"token_pool\": true}'); the new weights start from their own init")
    p.add_argument("--dataset", required=True, help="dataset name (pianoroll, shapes, moving_shapes)")
    p.add_argument("--dataset-args", default="{}", help="dataset keyword arguments as JSON, e.g. '{\"width\": 128}'")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop and save after this much wall time")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="stop and save at this step while the LR schedule still runs to --max-steps (replays a run "
                        "that a time limit stopped; --resume latest without it goes on)")
    p.add_argument("--batch-size", type=int, default=16, help="per process and micro-step")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate at --base-batch-size")
    p.add_argument("--base-batch-size", type=int, default=16, help="total batch at which --lr was tuned")
    p.add_argument("--lr-scaling", choices=["none", "sqrt", "linear"], default="none",
                   help="rescale --lr to the real total batch (processes × batch × accumulation)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--lr-decay", choices=["none", "cosine", "cooldown"], default="none",
                   help="after the warm-up: constant; cosine to 10%% at --max-steps; or cooldown: constant until "
                        "--decay-start, then linear to 10%% at --max-steps (resume a constant-LR run with it)")
    p.add_argument("--decay-start", type=int, default=None, help="first step of the cooldown")
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw", help="lamb: layer-wise trust ratio")
    p.add_argument("--log-noise-scale", action="store_true",
                   help="log the gradient-noise scale B_noise (needs --grad-accum ≥ 2)")
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--ema-power", type=float, default=0.75)
    p.add_argument("--ema-max-decay", type=float, default=0.9999)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--checkpoints-total-limit", type=int, default=3)
    p.add_argument("--sample-every", type=int, default=0, help="save a sample grid every N steps (0: never)")
    p.add_argument("--eval-every", type=int, default=0, help="held-out EMA loss every N steps (0: never)")
    p.add_argument("--eval-samples", type=int, default=0,
                   help="score the held-out loss on this many items with fixed noise, the same for any batch size "
                        "and seed (0: 4 batches of --batch-size with the run's seed)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                   help="autocast precision (default: the accelerate config's, e.g. training/configs/bf16.yaml; "
                        "else no)")
    p.add_argument("--weighting", choices=["soft-min-snr", "karras", "snr"], default="soft-min-snr")
    p.add_argument("--sigma-dist", choices=["cosine-interpolated", "log-normal"], default="cosine-interpolated")
    p.add_argument("--immiscible", choices=["none", "knn", "assign"], default="none",
                   help="immiscible diffusion: nearest-of-k noise (knn) or batch linear assignment")
    p.add_argument("--immiscible-k", type=int, default=4)
    p.add_argument("--text-encoder", default=None,
                   help="text-conditioned training: an open_clip folder (e.g. assets/clip-shapes) or a diffusers "
                        "text-encoder folder; captions come from the dataset's 'caption' field")
    p.add_argument("--train-text-encoder", action="store_true",
                   help="train the text encoder together with the model (its LR: --lr × --text-lr-scale); the "
                        "saved pipeline holds the fine-tuned encoder")
    p.add_argument("--text-lr-scale", type=float, default=0.5,
                   help="with --train-text-encoder: the text encoder's learning rate as a multiple of --lr")
    p.add_argument("--text-drop-prob", type=float, default=0.1, help="caption dropout for classifier-free guidance")
    p.add_argument("--logit-mean", type=float, default=0.0, help="flow: logit-normal timestep mean")
    p.add_argument("--logit-std", type=float, default=1.0, help="flow: logit-normal timestep std")
    p.add_argument("--flow-shift", type=float, default=None,
                   help="flow: timestep shift (default √(H·W)/64, 1 at 64×64)")
    p.add_argument("--given-frames-prob", type=float, default=0.5,
                   help="flow, video: probability that a clip's first k frames are given (frame continuation)")
    p.add_argument("--one-frame-share", type=float, default=0.0,
                   help="flow, video: share of the given prefixes that are the first frame only (image to video)")
    p.add_argument("--layout-drop-prob", type=float, default=0.15,
                   help="flow, layouts (--dataset-args '{\"layout\": true}', a model with layout_conditioning): "
                        "probability that a clip's layout is dropped while its caption is kept")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


def make_sample_fn(dataset_name: str, shape: tuple[int, ...], steps: int = 20, n: int = 4):
    """A sample-grid function for the training loop (EDM Heun sampler, fixed seed)."""
    from genmodels.diffusion.edm import KarrasDenoiser
    from genmodels.diffusion.sampling import sample

    def to_image(x: torch.Tensor):
        from PIL import Image

        if dataset_name == "pianoroll":
            from genmodels.music import MODEL_THRESHOLD, render_roll

            tiles = [render_roll(((r.clamp(-1, 1) + 1) / 2).numpy(), scale=2, threshold=MODEL_THRESHOLD) for r in x]
        else:
            tiles = [Image.fromarray(((r.clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).numpy()) for r in x]
        w, h = tiles[0].size
        grid = Image.new("RGB", (w, h * len(tiles)))
        for i, t in enumerate(tiles):
            grid.paste(t, (0, i * h))
        return grid

    @torch.no_grad()
    def sample_fn(model, step: int):
        denoiser = KarrasDenoiser(model)
        device = next(model.parameters()).device
        out = sample(denoiser.denoise, (n, *shape), num_steps=steps, generator=torch.Generator().manual_seed(0),
                     device=device)
        return to_image(out.sample.cpu())

    return sample_fn


def build(args: argparse.Namespace) -> Training:
    """Model, datasets, objective and loop config from parsed arguments; bad arguments raise SystemExit."""
    try:
        dataset_args = json.loads(args.dataset_args)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--dataset-args is not valid JSON: {err}") from err
    if not isinstance(dataset_args, dict) or "seed" in dataset_args:
        raise SystemExit(f"--dataset-args must be a JSON object of dataset arguments (the seed is --seed), "
                         f"got {args.dataset_args!r}")
    torch.manual_seed(args.seed)  # model initialisation
    entry = model_entry(args.model)
    if args.init:
        if args.config is not None:
            raise SystemExit("--init takes the architecture from the folder's config; drop --config")
        model = load_init_model(args.model, args.init, args.init_config)
    else:
        if args.init_config is not None:
            raise SystemExit("--init-config changes the config of an --init model; give --init")
        model = build_model(args.model, args.config or "tiny")
    try:
        train_ds = build_dataset(args.dataset, "train", seed=args.seed, **dataset_args)
        val_ds = build_dataset(args.dataset, "val", **{k: v for k, v in dataset_args.items() if k != "transpose"})
    except ValueError as err:
        raise SystemExit(f"--dataset {args.dataset} --dataset-args {args.dataset_args}: {err}") from err
    shape = tuple(train_ds[0]["pixel_values"].shape)
    if hasattr(model, "check_input_size"):
        model.check_input_size(*shape[-2:])
    objective = build_objective(args, entry.objective, shape)
    text_encoder = None
    if args.text_encoder:
        if "caption" not in train_ds[0]:
            raise SystemExit(f"--text-encoder given, but the {args.dataset} dataset has no captions")
        text_encoder = load_text_encoder(args.text_encoder)
        if getattr(model.config, "text_dim", None) != text_encoder.width:
            raise SystemExit(f"the text encoder's tokens are {text_encoder.width} wide; the model expects "
                             f"text_dim={getattr(model.config, 'text_dim', None)}")
        use_pooled = bool(getattr(model, "pooled_dim", 0))
        if use_pooled and model.pooled_dim != text_encoder.embed_dim:
            raise SystemExit(f"the text encoder's pooled features are {text_encoder.embed_dim} wide; the model "
                             f"expects pooled_text_dim={model.pooled_dim}")
        objective = TextConditioned(objective, text_encoder, use_pooled=use_pooled)
        if getattr(train_ds, "layout_planner", None) and not getattr(model.config, "layout_conditioning", False):
            raise SystemExit("the dataset serves layouts, but the model has no layout_conditioning (--init-config "
                             "'{\"layout_conditioning\": true}' adds it to a trained model)")
        if args.train_text_encoder:
            if not args.text_lr_scale > 0:
                raise SystemExit(f"--text-lr-scale must be > 0, got {args.text_lr_scale}")
            # the pair trains, averages (EMA) and checkpoints as one module
            model = TextTrainedModel(model, text_encoder, text_lr_scale=args.text_lr_scale)
    elif args.train_text_encoder:
        raise SystemExit("--train-text-encoder needs --text-encoder")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    return Training(cfg, model, objective, train_ds, val_ds, text_encoder=text_encoder, shape=shape)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start_script(args.output_dir, args.threads)
    t = build(args)
    planner = getattr(t.train_ds, "prompt_planner", None)  # layout captions: the pipeline plans prompts too
    layout_planner = getattr(t.train_ds, "layout_planner", None)  # clip layouts: the pipeline plans them too
    sample_fn = None
    if args.sample_every:
        if t.text_encoder is None:
            sample_fn = make_sample_fn(args.dataset, t.shape)
        elif len(t.shape) == 4:
            sample_fn = make_video_sample_fn(t.text_encoder, t.shape, shift=sampling_shift(args.flow_shift, t.shape),
                                             layout_planner=layout_planner)
        else:
            sample_fn = make_text_sample_fn(t.text_encoder, t.shape, prompt_planner=planner)
    return train(t.cfg, t.model, t.objective, t.train_ds, val_dataset=t.val_ds, sample_fn=sample_fn,
                 save_fn=make_save_fn(args.model, args.dataset, t.shape, t.text_encoder, flow_shift=args.flow_shift,
                                      prompt_planner=planner, layout_planner=layout_planner))


def build_objective(args, kind: str, shape: tuple[int, ...]):
    """The training objective a model family uses (``ModelEntry.objective``), from the command line."""
    if kind == "edm":
        return EDMObjective(
            sigma_sampler=SigmaSampler(kind=args.sigma_dist, image_d=max(shape[-2:])),
            weighting=args.weighting, immiscible=args.immiscible, immiscible_k=args.immiscible_k,
        )
    if kind == "flow":
        if args.immiscible != "none":
            raise SystemExit("--immiscible is implemented for the EDM objective only")
        if not 0 <= args.text_drop_prob <= 1:
            raise SystemExit(f"--text-drop-prob must lie in [0, 1], got {args.text_drop_prob}")
        if not 0 <= args.given_frames_prob <= 1:
            raise SystemExit(f"--given-frames-prob must lie in [0, 1], got {args.given_frames_prob}")
        if not 0 <= args.one_frame_share <= 1:
            raise SystemExit(f"--one-frame-share must lie in [0, 1], got {args.one_frame_share}")
        if not 0 <= args.layout_drop_prob <= 1:
            raise SystemExit(f"--layout-drop-prob must lie in [0, 1], got {args.layout_drop_prob}")
        return FlowObjective(shift=args.flow_shift, logit_mean=args.logit_mean, logit_std=args.logit_std,
                             text_drop_prob=args.text_drop_prob, given_frames_prob=args.given_frames_prob,
                             one_frame_share=args.one_frame_share, layout_drop_prob=args.layout_drop_prob)
    hint = "; VAR trains with training/train_var.py" if kind == "next-scale" else ""
    raise SystemExit(f"objective {kind!r} is not wired into train_dit{hint}")


def load_init_model(name: str, path: str, init_config: str | None = None) -> torch.nn.Module:
    """Float32 ``name`` model from a pipeline folder (its ``transformer/``) or a model folder, safetensors only;
    ``init_config``: a JSON object of config keys to change (weights the folder lacks keep their init)."""
    from genmodels.loading import UnsafeCheckpointError, check_pipeline_folder

    folder = Path(path)
    overrides = {}
    if init_config is not None:
        try:
            overrides = json.loads(init_config)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--init-config is not valid JSON: {err}") from err
        if not isinstance(overrides, dict) or not overrides:
            raise SystemExit(f"--init-config must be a non-empty JSON object, got {init_config!r}")
    try:
        if (folder / "model_index.json").is_file():
            folder = check_pipeline_folder(folder) / "transformer"
        if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
            raise UnsafeCheckpointError(f"{path} holds no model (config.json + safetensors weights)")
        cls = model_entry(name).model_class()
        config = json.loads((folder / "config.json").read_text())
        if config.get("_class_name", cls.__name__) != cls.__name__:
            raise UnsafeCheckpointError(f"{folder} holds a {config['_class_name']}, not a {cls.__name__} "
                                        f"(--model {name})")
        unknown = sorted(set(overrides) - set(inspect.signature(cls.__init__).parameters) - {"self"})
        if unknown:
            raise UnsafeCheckpointError(f"--init-config: {cls.__name__} has no config key {', '.join(unknown)}")
        if overrides:  # build the model anew, then load what the folder holds (strict=False)
            return cls.from_pretrained(str(folder), use_safetensors=True, torch_dtype=torch.float32,
                                       low_cpu_mem_usage=False, **overrides)
        return cls.from_pretrained(str(folder), use_safetensors=True, torch_dtype=torch.float32)
    except UnsafeCheckpointError as err:
        raise SystemExit(f"--init: {err}") from err
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        raise SystemExit(f"--init: cannot load {folder}: {type(err).__name__}: {err}") from err


def load_text_encoder(path: str):
    """A frozen :class:`~genmodels.text.CLIPTextEncoder` from an open_clip folder or a diffusers folder."""
    from genmodels.text import CLIPTextEncoder, TextEncoderError

    folder = Path(path)
    try:
        if (folder / "config.json").is_file():
            return CLIPTextEncoder.from_pretrained(str(folder), use_safetensors=True)
        return CLIPTextEncoder.from_open_clip(folder)
    except (OSError, TextEncoderError) as err:
        raise SystemExit(f"cannot load the text encoder {path}: {err}") from err


def make_text_sample_fn(text_encoder, shape: tuple[int, ...], steps: int = 20, guidance: float = 4.0,
                        prompt_planner: str | None = None):
    """A sample-grid function for text-to-image training: the first prompt of each shapes-eval category."""
    from PIL import Image

    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.eval.shapes_oracle import load_eval_set
    from genmodels.pipelines.text_to_image import TextToImagePipeline

    prompts = list({item["category"]: item["prompt"] for item in reversed(load_eval_set())}.values())

    def sample_fn(model, step: int):
        model, trained = unwrap_text_trained(model)
        pipe = TextToImagePipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++"),
                                   text_encoder=text_encoder if trained is None else trained,
                                   prompt_planner=prompt_planner)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, height=shape[-2],
                      width=shape[-1], generator=torch.Generator().manual_seed(0)).images
        grid = Image.new("RGB", (shape[-1] * len(images), shape[-2]))
        for i, image in enumerate(images):
            grid.paste(image, (i * shape[-1], 0))
        return grid

    return sample_fn


def sampling_shift(flow_shift: float | None, shape: tuple[int, ...]) -> float:
    """The time shift the saved scheduler samples with: the one training used (``--flow-shift``, else
    :func:`~genmodels.diffusion.flow.default_shift` of the frame size)."""
    from genmodels.diffusion.flow import default_shift

    return float(flow_shift) if flow_shift is not None else default_shift(*shape[-2:])


VIDEO_SAMPLE_PROMPTS = ("a red circle moves to the right", "a blue square moves up", "a green triangle stays still",
                        "a yellow circle moves left and a purple square moves down")


def make_video_sample_fn(text_encoder, shape: tuple[int, ...], steps: int = 20, guidance: float = 4.0,
                         shift: float = 1.0, layout_planner: str | None = None):
    """A sample-grid function for text-to-video training: one row of frames per prompt."""
    from PIL import Image

    from genmodels.diffusion.flow import make_flow_scheduler
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    frames, height, width = shape[-3:]

    def sample_fn(model, step: int):
        model, trained = unwrap_text_trained(model)
        pipe = TextToVideoPipeline(transformer=model, scheduler=make_flow_scheduler("dpmsolver++", shift=shift),
                                   text_encoder=text_encoder if trained is None else trained,
                                   layout_planner=layout_planner)
        pipe.set_progress_bar_config(disable=True)
        clips = pipe(list(VIDEO_SAMPLE_PROMPTS), num_frames=frames, num_inference_steps=steps,
                     guidance_scale=guidance, height=height, width=width,
                     generator=torch.Generator().manual_seed(0)).frames
        grid = Image.new("RGB", (width * frames, height * len(clips)))
        for row, clip in enumerate(clips):
            for col, frame in enumerate(clip):
                grid.paste(Image.fromarray(frame), (col * width, row * height))
        return grid

    return sample_fn


def make_save_fn(model_name: str, dataset_name: str, shape: tuple[int, ...], text_encoder=None,
                 flow_shift: float | None = None, prompt_planner: str | None = None,
                 layout_planner: str | None = None):
    """Save the final EMA model as a diffusers pipeline folder where a pipeline exists, else the bare model.
    A model trained with its text encoder (:class:`TextTrainedModel`) saves with that encoder; a text-to-image
    pipeline records ``prompt_planner`` (the dataset's, when its captions were layout captions), a
    text-to-video pipeline ``layout_planner`` (when it was trained on layouts)."""

    def save_fn(ema_model, out_dir: Path) -> None:
        ema_model, trained = unwrap_text_trained(ema_model)
        encoder = text_encoder if trained is None else trained
        if model_name in ("sana", "dim") and encoder is not None:
            from genmodels.diffusion.flow import make_flow_scheduler
            from genmodels.pipelines.text_to_image import TextToImagePipeline
            from genmodels.pipelines.text_to_video import TextToVideoPipeline

            ema_model.register_to_config(sample_size=int(shape[-1]))
            pipeline_class, extra = TextToImagePipeline, {"prompt_planner": prompt_planner}
            if len(shape) == 4:  # [C, F, H, W]: a clip model
                ema_model.register_to_config(num_frames=int(shape[1]))
                pipeline_class, extra = TextToVideoPipeline, {"layout_planner": layout_planner}
            scheduler = make_flow_scheduler("dpmsolver++", shift=sampling_shift(flow_shift, shape))
            pipe = pipeline_class(transformer=ema_model, scheduler=scheduler, text_encoder=encoder.to("cpu"), **extra)
            pipe.save_pretrained(Path(out_dir) / "pipeline")
            return
        if model_name == "hdit" and dataset_name == "pianoroll":
            from genmodels.diffusion.sampling import make_edm_scheduler
            from genmodels.pipelines import PianoRollInpaintPipeline

            ema_model.register_to_config(sample_size=list(shape[-2:]))
            pipe = PianoRollInpaintPipeline(transformer=ema_model, scheduler=make_edm_scheduler("euler"))
            pipe.save_pretrained(Path(out_dir) / "pipeline")
        else:
            ema_model.save_pretrained(Path(out_dir) / "model")

    return save_fn


if __name__ == "__main__":
    main()
