"""Text-to-video and frame continuation with Diffusion Mamba (rectified flow).

Components as in :class:`~genmodels.pipelines.text_to_image.TextToImagePipeline`: ``transformer``
(:class:`~genmodels.dim.DiffusionMamba`, clips ``[B, 3, F, H, W]`` in [−1, 1]), ``scheduler`` (a diffusers flow
scheduler) and ``text_encoder`` (``encode(prompts) -> (tokens, mask, pooled)``).

Continuation is temporal inpainting: given the first K frames, the model (trained with random given-frame
prefixes, ``frame_conditioning=True``) sees them clean and flagged by its frame-mask channel at every step and
generates the remaining F − K frames; the given frames are copied into the output bit-exactly.

Layout planning: a pipeline saved with ``layout_planner="moving_shapes"`` (a model with
``layout_conditioning``, trained on the moving-shapes world's layouts) turns each prompt into a layout first, per
object a noun phrase and a box in every frame (:func:`~genmodels.data.moving_shapes.plan_layout`: the caption
parsed, starts and speeds drawn as the world draws them, from the prompt's seed), and the model draws the clip
along it; the unconditional half of guidance sees neither text nor layout. Prompts the planner cannot read
(outside the world's grammar), other clip sizes and continuations get no layout, which the model was also
trained for. ``plan_layout=False`` turns planning off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

import genmodels.dim  # noqa: F401  (diffusers loads components only from imported modules)
import genmodels.text.clip  # noqa: F401
from genmodels.diffusion.flow import cfg_velocity, sample_flow_scheduler
from genmodels.pipelines.text_to_image import (
    ProgressFn,
    TextToImagePipeline,
    _check_size,
    check_negative_prompts,
    image_to_array,
)

MAX_FRAMES = 64  # per clip, generated or given
FrameInput = np.ndarray | Sequence[PIL.Image.Image | np.ndarray]


@dataclass
class TextToVideoOutput(BaseOutput):
    """``frames``: ``[B, F, H, W, 3]`` uint8 (``output_type="np"``) or one list of PIL frames per prompt;
    ``nfe``: network evaluations spent (one CFG-batched call counts once); ``given``: how many leading frames
    were given (copied from ``first_frames``)."""

    frames: np.ndarray | list[list[PIL.Image.Image]]
    nfe: int
    given: int = 0
    layouts: list | None = None  # per prompt, the planned ClipLayout or None (no layout planned)


LAYOUT_PLANNERS = ("moving_shapes",)


def check_layout_planner(planner) -> str | None:
    if planner is not None and planner not in LAYOUT_PLANNERS:
        raise ValueError(f"layout_planner must be None or one of {list(LAYOUT_PLANNERS)}, got {planner!r}")
    return planner


def frames_to_array(frames: FrameInput) -> np.ndarray:
    """A clip as ``[K, H, W, 3]`` uint8 from an array of that shape or a sequence of PIL images / ``[H, W, 3]``
    uint8 arrays (all the same size); a ``[B, K, H, W, 3]`` array (one clip per prompt) passes through."""
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (4, 5) or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"first_frames must be [K, H, W, 3] uint8 (or [B, K, H, W, 3], one clip per prompt), "
                             f"got {frames.dtype} {list(frames.shape)}")
        return frames
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence) or not frames:
        raise ValueError("first_frames must be a [K, H, W, 3] uint8 array or a non-empty list of frames")
    arrays = [image_to_array(f) for f in frames]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"first_frames differ in size: {sorted({a.shape[:2] for a in arrays})}")
    return np.stack(arrays)


class TextToVideoPipeline(TextToImagePipeline):
    """DiffusionMamba (``transformer``) + flow scheduler (``scheduler``) + text encoder (``text_encoder``);
    ``layout_planner`` (module docstring) for a model with layout conditioning."""

    def __init__(self, transformer, scheduler, text_encoder=None, prompt_planner: str | None = None,
                 layout_planner: str | None = None):
        super().__init__(transformer, scheduler, text_encoder, prompt_planner)
        if layout_planner is not None and not getattr(transformer.config, "layout_conditioning", False):
            raise ValueError("a layout_planner needs a transformer with layout_conditioning=True")
        self.register_to_config(layout_planner=check_layout_planner(layout_planner))

    def plan_layouts(self, prompts: list[str], generator, frames: int, height: int, width: int,
                     plan: bool | None, continuing: bool) -> list | None:
        """Per prompt a :class:`~genmodels.data.moving_shapes.ClipLayout` or None, or None when nothing is
        planned. ``plan`` None: plan where the pipeline has a planner, the clip is a square the planner draws
        and nothing is given; prompts it cannot read get None. ``plan`` True: the same, but any of those
        failing raises ``ValueError``; False: no layouts."""
        from genmodels.data import moving_shapes as world
        from genmodels.pipelines.text_to_image import _planner_seed

        if plan is False:
            return None
        planner = getattr(self.config, "layout_planner", None)
        why = None
        if planner is None:
            why = "this pipeline has no layout_planner"
        elif continuing:
            why = "a continuation follows its given frames, not a planned layout"
        elif height != width or height not in world.CLIP_SIZES or not world.MIN_FRAMES <= frames <= world.MAX_FRAMES:
            why = (f"the planner lays out square clips of {list(world.CLIP_SIZES)} pixels and {world.MIN_FRAMES}.."
                   f"{world.MAX_FRAMES} frames, not {frames} frames of {height}×{width}")
        if why is not None:
            if plan:
                raise ValueError(f"plan_layout=True, but {why}")
            return None
        layouts = []
        for i, prompt in enumerate(prompts):
            try:
                rng = np.random.default_rng(_planner_seed(generator, i))
                layouts.append(world.plan_layout(prompt, rng, height, frames))
            except world.MovingShapesError as err:
                if plan:
                    raise ValueError(f"plan_layout=True, but the layout planner cannot lay out {prompt!r}: {err}"
                                     ) from err
                layouts.append(None)
        return layouts if any(lay is not None for lay in layouts) else None

    def layout_kwargs(self, layouts: list, guided: bool, device, dtype) -> dict:
        """The transformer's layout arguments for ``layouts`` (None entries: no layout), the batch doubled for
        guidance with the layout dropped in the unconditional half."""
        frames = next(lay for lay in layouts if lay is not None).boxes.shape[1]
        k = max(len(lay.phrases) for lay in layouts if lay is not None)
        boxes = torch.zeros(len(layouts), k, frames, 4)
        mask = torch.zeros(len(layouts), k, dtype=torch.bool)
        phrases = []
        for i, lay in enumerate(layouts):
            if lay is not None:
                n = len(lay.phrases)
                boxes[i, :n] = torch.from_numpy(lay.boxes)
                mask[i, :n] = True
                phrases += list(lay.phrases)
        pooled = self.text_encoder.encode(phrases)[2].to(device=device, dtype=dtype)
        embeds = torch.zeros(len(layouts), k, pooled.shape[-1], device=device, dtype=dtype)
        embeds[mask.to(device)] = pooled
        boxes, mask = boxes.to(device), mask.to(device)
        drop = torch.zeros(len(layouts), dtype=torch.bool, device=device)
        if guided:
            boxes, embeds, mask = torch.cat([boxes, boxes]), torch.cat([embeds, embeds]), torch.cat([mask, mask])
            drop = torch.cat([~drop, drop])
        return {"layout_boxes": boxes, "layout_phrases": embeds, "layout_mask": mask, "drop_layout": drop}

    @property
    def default_frames(self) -> int:
        return int(self.transformer.config.num_frames)

    def check_video_inputs(self, prompt, num_frames, num_inference_steps, guidance_scale, first_frames, output_type,
                           height, width, generator=None, guidance_interval=None
                           ) -> tuple[list[str], np.ndarray | None, int, int, int]:
        """Validate everything before any work; returns (prompts, first frames ``[K, H, W, 3]`` or None,
        frames, height, width)."""
        prompts = self.check_prompt_inputs(prompt, num_inference_steps, guidance_scale, generator, guidance_interval)
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer (or None for the model's default), got {value!r}")
        frames = int(num_frames or self.default_frames)
        if frames > MAX_FRAMES:
            raise ValueError(f"num_frames must be at most {MAX_FRAMES}, got {frames}")
        given = None
        if first_frames is not None:
            if not self.transformer.config.frame_conditioning:
                raise ValueError("this model was trained without frame conditioning; it cannot continue a clip")
            given = frames_to_array(first_frames)
            if given.ndim == 5 and given.shape[0] != len(prompts):
                raise ValueError(f"first_frames holds {given.shape[0]} clips for {len(prompts)} prompts; give one "
                                 "per prompt, or one [K, H, W, 3] clip for all")
            k, fh, fw = given.shape[-4:-1]
            _check_size(fw, fh, "a given frame")
            if (height or fh) != fh or (width or fw) != fw:
                raise ValueError(f"height×width {height}×{width} differs from the given frames' {fh}×{fw}")
            height, width = fh, fw
            if k >= frames:
                raise ValueError(f"{k} frames given for a {frames}-frame clip: nothing left to generate "
                                 f"(raise num_frames above {k})")
        height, width = int(height or self.default_size), int(width or self.default_size)
        _check_size(width, height, "the requested frame")
        self.transformer.check_input_size(height, width)
        return prompts, given, frames, height, width

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        first_frames: FrameInput | None = None,
        output_type: str = "np",
        callback: ProgressFn | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        guidance_interval: tuple[float, float] | None = None,
        first_frame_pass: bool = False,
        negative_prompt: str | list[str | None] | None = None,
        plan_layout: bool | None = None,
    ) -> TextToVideoOutput:
        """Generate one clip per prompt, or continue ``first_frames``: ``[K, H, W, 3]`` uint8 (or a list of K
        frames) given to every prompt, or ``[B, K, H, W, 3]``, one clip per prompt.

        ``generator``: one for the batch or one per prompt (clip i then depends only on prompt i and
        ``generator[i]``). ``guidance_scale`` w: v = v_null + w·(v_text − v_null), only at t_lo < t ≤ t_hi
        with ``guidance_interval=(t_lo, t_hi)`` (w = 1 elsewhere). ``callback(step, steps)`` fires after every
        step. Raises ``ValueError`` on bad input and ``FloatingPointError`` on NaN / inf.

        ``negative_prompt`` (one for all prompts, or one per prompt with None for the null text) replaces the
        null text in guidance: v = v_neg + w·(v_text − v_neg). :func:`~genmodels.data.moving_shapes.motion_negative`
        gives a prompt's negative that steers its clip away from standing still.

        ``first_frame_pass`` (text to video in two passes, image then animation): a whole clip is sampled, only
        its first frame is kept, and the other frames are sampled again as a continuation of it, so the
        motion is drawn with the object already placed; twice the network evaluations.

        ``plan_layout`` (None: where the pipeline can; True: required; False: never): draw each clip along a
        layout from the pipeline's ``layout_planner`` (module docstring); the output's ``layouts`` holds them.
        """
        prompts, given, frames, height, width = self.check_video_inputs(
            prompt, num_frames, num_inference_steps, guidance_scale, first_frames, output_type, height, width,
            generator, guidance_interval)
        negatives = check_negative_prompts(negative_prompt, len(prompts))
        if first_frame_pass:
            if given is not None:
                raise ValueError("first_frame_pass draws the first frame itself; give no first_frames")
            if not self.transformer.config.frame_conditioning:
                raise ValueError("this model was trained without frame conditioning; it cannot animate a frame")
            if frames < 2:
                raise ValueError("first_frame_pass needs a clip of at least 2 frames")
            common = dict(num_frames=frames, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          generator=generator, height=height, width=width, guidance_interval=guidance_interval,
                          negative_prompt=negatives)
            if plan_layout:
                raise ValueError("first_frame_pass animates a drawn first frame; it does not follow a layout")
            passes = []
            for n in range(2):
                def on_step(i: int, total: int, offset: int = n * num_inference_steps) -> None:
                    if callback is not None:
                        callback(offset + i, 2 * total)

                first = None if n == 0 else passes[0].frames[:, :1]
                passes.append(self(prompts, first_frames=first, output_type="np" if n == 0 else output_type,
                                   callback=on_step, plan_layout=False, **common))
            return TextToVideoOutput(frames=passes[1].frames, nfe=passes[0].nfe + passes[1].nfe, given=0)
        transformer = self.transformer
        device, dtype = self._execution_device, transformer.dtype
        batch = len(prompts)
        guided = guidance_scale != 1
        layouts = self.plan_layouts(prompts, generator, frames, height, width, plan_layout, given is not None)
        context, pooled = self.prepare_text(prompts, guided, device, dtype, negative=negatives)

        model_kwargs = {} if layouts is None else self.layout_kwargs(layouts, guided, device, dtype)
        known = frame_mask = None
        if transformer.config.frame_conditioning:
            k = 0 if given is None else given.shape[-4]
            frame_mask = (torch.arange(frames, device=device) < k)[None].expand(batch * (1 + guided), -1)
            model_kwargs["frame_mask"] = frame_mask
            if given is not None:
                given_t = torch.from_numpy(given if given.ndim == 5 else given[None])  # [B or 1, K, H, W, 3]
                known = torch.zeros(given_t.shape[0], 3, frames, height, width, device=device)
                known[:, :, :k] = given_t.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1).to(device)
                if guided:  # the null-text half of the CFG batch continues the same clips
                    known = torch.cat([known, known]) if known.shape[0] > 1 else known
                keep = frame_mask[:1, None, :, None, None]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if known is not None:  # the given frames enter clean, whatever the sampler holds there
                x = torch.where(keep, known.to(x.dtype), x)
            return transformer(x.to(dtype), t, pooled_text=pooled, context_states=context, **model_kwargs).float()

        velocity_fn = cfg_velocity(velocity, float(guidance_scale), interval=guidance_interval) if guided else velocity
        with self.progress_bar(total=num_inference_steps) as bar:
            def on_step(i: int, total: int) -> None:
                bar.update()
                if callback is not None:
                    callback(i, total)

            out = sample_flow_scheduler(velocity_fn, (batch, transformer.config.in_channels, frames, height, width),
                                        num_inference_steps, scheduler=self.scheduler, generator=generator,
                                        callback=on_step, device=device)

        x = out.sample.float()
        if not torch.isfinite(x).all():
            raise FloatingPointError("the model produced NaN or infinite values; no clip was made")
        clips = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
        if given is not None:  # given frames copied bit-exactly
            clips[:, : given.shape[-4]] = given if given.ndim == 5 else given[None]
        if output_type == "pil":
            clips = [[PIL.Image.fromarray(f) for f in clip] for clip in clips]
        return TextToVideoOutput(frames=clips, nfe=out.nfe, given=0 if given is None else int(given.shape[-4]),
                                 layouts=layouts)


__all__ = ["LAYOUT_PLANNERS", "TextToVideoOutput", "TextToVideoPipeline", "check_layout_planner", "frames_to_array"]
