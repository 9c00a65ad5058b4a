"""Text-to-image and text-guided inpainting with the SANA-style linear DiT (rectified flow).

Components: ``transformer`` (:class:`~genmodels.sana.SanaDiT`, predicts the velocity ε − x₀ in pixel space,
images in [−1, 1]), ``scheduler`` (a diffusers flow scheduler: ``FlowMatchEulerDiscreteScheduler`` or
``DPMSolverMultistepScheduler`` with flow sigmas, see :func:`genmodels.diffusion.flow.make_flow_scheduler`)
and ``text_encoder``: any object with ``encode(prompts: list[str]) -> (tokens [B, L, D], mask [B, L],
pooled [B, D] | None)``.

One call: check inputs, encode the prompts once, build the classifier-free-guidance batch (null text first,
then the prompts), precompute the per-block text states once (CrossWKV absorbs the text into a state that
every step reuses), integrate from noise with the scheduler (re-imposing the known region when ``mask`` and
``image`` are given), decode to uint8. Mask semantics: **True / white = generate**, False / black = keep;
outside the mask the output equals the input image exactly.

Prompt planning: a pipeline saved with ``prompt_planner="shapes_layout"`` (a model trained on layout captions,
``ShapesDataset(layout_share=...)``) first rewrites every prompt of the shapes grammar into a layout caption
of a scene that satisfies it, its unstated colours, sizes and positions drawn from the prompt's generator
(:func:`genmodels.data.shapes_layout.plan_prompt`; prompts outside the grammar pass unchanged).
``plan_prompts=False`` turns it off for one call; the captions the model saw are in the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

import genmodels.sana  # noqa: F401  (diffusers loads components only from imported modules)
import genmodels.text.clip  # noqa: F401
from genmodels.diffusion.flow import (
    cfg_velocity,
    check_guidance_interval,
    sample_flow_inpaint,
    sample_flow_scheduler,
    scheduler_shift,
)

ProgressFn = Callable[[int, int], None]
ImageInput = PIL.Image.Image | np.ndarray
MAX_STEPS = 1000
MAX_GUIDANCE = 30.0
MAX_IMAGE_PIXELS = 4096 * 4096  # input images and masks (checked on the size, before decoding) and outputs
PROMPT_PLANNERS = ("shapes_layout",)


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{what} is too large ({width}×{height} pixels; up to {MAX_IMAGE_PIXELS} are accepted)")


@dataclass
class TextToImageOutput(BaseOutput):
    """``images``: a list of PIL images, or ``[B, H, W, 3]`` uint8 for ``output_type="np"``; ``nfe``: network
    evaluations spent (one CFG-batched call counts once); ``prompts``: the captions the model was given (the
    planned layout captions when the pipeline plans prompts, else the prompts as passed)."""

    images: list[PIL.Image.Image] | np.ndarray
    nfe: int
    prompts: list[str] | None = None


def check_prompt_planner(planner) -> str | None:
    if planner is not None and planner not in PROMPT_PLANNERS:
        raise ValueError(f"prompt_planner must be None or one of {list(PROMPT_PLANNERS)}, got {planner!r}")
    return planner


def _planner_seed(generator, index: int) -> int | None:
    """The seed of prompt ``index``'s layout: its generator's initial seed (plus ``index`` for a shared one), so
    the same prompt and seed give the same layout in any batch; None (fresh entropy) without a generator."""
    if isinstance(generator, list):
        return int(generator[index].initial_seed())
    if generator is not None:
        return int(generator.initial_seed()) + index
    return None


def plan_prompts(prompts: list[str], planner: str, generator, side: int) -> list[str]:
    """``prompts`` rewritten by ``planner`` (see the module docstring), one layout per prompt and seed."""
    from genmodels.data.shapes_layout import plan_prompt

    check_prompt_planner(planner)
    planned = []
    for i, prompt in enumerate(prompts):
        planned.append(plan_prompt(prompt, np.random.default_rng(_planner_seed(generator, i)), side)[0])
    return planned


def image_to_array(image: ImageInput) -> np.ndarray:
    """PIL image or ``[H, W, 3]`` uint8 array → ``[H, W, 3]`` uint8 (RGB). A PIL image over ``MAX_IMAGE_PIXELS``
    is refused from its size alone, before it is decoded."""
    if isinstance(image, PIL.Image.Image):
        _check_size(*image.size, "image")
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be a PIL image or an [H, W, 3] uint8 array, got {array.dtype} "
                         f"{list(array.shape)}")
    return array


def mask_to_array(mask: ImageInput) -> np.ndarray:
    """PIL mask (white = generate) or ``[H, W]`` array (True / ≥ 0.5 = generate) → ``[H, W]`` bool. A PIL mask
    over ``MAX_IMAGE_PIXELS`` is refused from its size alone, before it is decoded."""
    if isinstance(mask, PIL.Image.Image):
        _check_size(*mask.size, "mask")
        return np.asarray(mask.convert("L")) > 127
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be a PIL image or an [H, W] array, got shape {list(array.shape)}")
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError("mask must hold booleans or finite numbers in [0, 1]")
    if array.min() < 0 or array.max() > 1:
        raise ValueError("a numeric mask must lie in [0, 1] (1 = generate, 0 = keep)")
    return array >= 0.5


def check_prompts(prompt) -> list[str]:
    """A prompt or a non-empty list of non-blank prompts → list (``ValueError`` otherwise)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {type(prompt).__name__}")
    if any(not p.strip() for p in prompts):
        raise ValueError("prompt is empty: describe what to generate (guidance_scale=0 samples "
                         "unconditionally, but still needs a prompt)")
    return list(prompts)


def check_negative_prompts(negative_prompt, batch: int) -> list[str | None] | None:
    """None, one non-blank negative prompt for every prompt, or a list of ``batch`` entries, each a non-blank
    string or None (that prompt keeps the null text) → a list of ``batch`` entries, or None when all are None."""
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * batch
    if not isinstance(negative_prompt, (list, tuple)) or len(negative_prompt) != batch:
        raise ValueError(f"negative_prompt must be a string or a list of {batch} (one per prompt), got "
                         f"{negative_prompt!r:.80}")
    for n in negative_prompt:
        if n is not None and (not isinstance(n, str) or not n.strip()):
            raise ValueError(f"negative_prompt entries must be non-blank strings or None (the null text), got {n!r}")
    negatives = list(negative_prompt)
    return None if all(n is None for n in negatives) else negatives


def check_guidance(guidance_scale, generator, batch: int) -> None:
    """Guidance in [0, MAX_GUIDANCE]; a generator list must have one generator per prompt."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float, np.floating)) \
            or not 0 <= guidance_scale <= MAX_GUIDANCE:  # NaN fails the comparison; no np.isfinite (big ints)
        raise ValueError(f"guidance_scale must be a number in [0, {MAX_GUIDANCE}], got {guidance_scale!r}")
    if isinstance(generator, (list, tuple)) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} prompts; give one per prompt "
                         "(or a single generator)")


def to_images(x: torch.Tensor, image: np.ndarray | None, mask: np.ndarray | None, output_type: str):
    """Model output ``[B, 3, H, W]`` in [−1, 1] → uint8 images (``[B, H, W, 3]`` or PIL), the known pixels of
    ``image`` (where ``mask`` is False) copied bit-exactly. ``FloatingPointError`` on NaN / inf."""
    x = x.float()
    if not torch.isfinite(x).all():
        raise FloatingPointError("the model produced NaN or infinite values; no image was made")
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if image is not None:
        images = np.where(mask[None, :, :, None], images, image[None])
    if output_type == "pil":
        images = [PIL.Image.fromarray(a) for a in images]
    return images


class TextToImagePipeline(DiffusionPipeline):
    """SanaDiT (``transformer``) + flow scheduler (``scheduler``) + text encoder (``text_encoder``)."""

    model_cpu_offload_seq = "transformer"
    accepts_generator_list = True  # generator may be one per prompt (batch-invariant results; see __call__)
    _optional_components = ["text_encoder"]

    def __init__(self, transformer, scheduler, text_encoder=None, prompt_planner: str | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, text_encoder=text_encoder)
        self.register_to_config(prompt_planner=check_prompt_planner(prompt_planner))

    @property
    def default_size(self) -> int:
        return int(self.transformer.config.sample_size)

    # Inputs

    def check_prompt_inputs(self, prompt, num_inference_steps, guidance_scale, generator=None,
                            guidance_interval=None) -> list[str]:
        """Validate the prompt, steps, guidance (scale and interval) and generators (shared by every
        text-conditioned pipeline); returns the prompts as a list."""
        prompts = check_prompts(prompt)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or not 1 <= num_inference_steps <= MAX_STEPS:
            raise ValueError(f"num_inference_steps must be an integer in 1..{MAX_STEPS}, got {num_inference_steps!r}")
        check_guidance(guidance_scale, generator, len(prompts))
        check_guidance_interval(guidance_interval)
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text_encoder; pass one with encode(prompts) -> "
                             "(tokens, mask, pooled)")
        return list(prompts)

    def check_inputs(self, prompt, num_inference_steps, guidance_scale, mask, image, output_type, height, width,
                     generator=None, guidance_interval=None
                     ) -> tuple[list[str], np.ndarray | None, np.ndarray | None, int, int]:
        """Validate everything before any work; returns (prompts, mask [H, W] bool, image [H, W, 3] uint8,
        height, width)."""
        prompts = self.check_prompt_inputs(prompt, num_inference_steps, guidance_scale, generator, guidance_interval)
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        if (mask is None) != (image is None):
            raise ValueError("inpainting needs both image and mask (True / white = generate); give both or neither")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer (or None for the model's size), got {value!r}")
        if image is not None:
            image, mask = image_to_array(image), mask_to_array(mask)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"mask is {mask.shape[1]}×{mask.shape[0]} but image is "
                                 f"{image.shape[1]}×{image.shape[0]} (width×height); they must match")
            if (height or image.shape[0]) != image.shape[0] or (width or image.shape[1]) != image.shape[1]:
                raise ValueError(f"height×width {height}×{width} differs from the image's "
                                 f"{image.shape[0]}×{image.shape[1]}")
            height, width = image.shape[:2]
            if not mask.any():
                raise ValueError("the mask covers nothing: mark the region to generate (True / white)")
        height, width = int(height or self.default_size), int(width or self.default_size)
        _check_size(width, height, "the requested image")
        self.transformer.check_input_size(height, width)
        return list(prompts), mask, image, height, width

    def maybe_plan_prompts(self, prompts: list[str], plan: bool | None, generator, side: int) -> list[str]:
        """``prompts`` through the pipeline's prompt planner when ``plan`` asks for it (None: when there is one)."""
        if plan is not None and not isinstance(plan, bool):
            raise ValueError(f"plan_prompts must be True, False or None, got {plan!r}")
        planner = getattr(self.config, "prompt_planner", None)
        if plan and planner is None:
            raise ValueError("plan_prompts=True, but this pipeline has no prompt_planner")
        if planner is None or plan is False:
            return list(prompts)
        return plan_prompts(prompts, planner, generator, side)

    def encode_prompt(self, prompts: list[str], device, dtype
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the text encoder once and check what it returns: tokens ``[B, L, text_dim]``, mask ``[B, L]``
        bool, pooled ``[B, P]`` (None when the encoder or the model has none)."""
        tokens, mask, pooled = self.text_encoder.encode(prompts)
        tokens = torch.as_tensor(tokens).to(device=device, dtype=dtype)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        mask = mask.to(device=device, dtype=torch.bool)
        text_dim = self.transformer.config.text_dim
        if tokens.ndim != 3 or tokens.shape[0] != len(prompts) or tokens.shape[-1] != text_dim:
            raise ValueError(f"text_encoder returned tokens {tuple(tokens.shape)}; the transformer expects "
                             f"[{len(prompts)}, L, {text_dim}]")
        if mask.shape != tokens.shape[:2] or not mask.any(1).all():
            raise ValueError("text_encoder returned a mask that does not match its tokens or marks no real token")
        if pooled is not None and self.transformer.pooled_dim:
            pooled = torch.as_tensor(pooled).to(device=device, dtype=dtype)
        else:
            pooled = None
        return tokens, mask, pooled

    def prepare_text(self, prompts: list[str], guided: bool, device, dtype, encoded=None,
                     negative: list[str | None] | None = None):
        """Encode the prompts once (or take ``encoded``, :meth:`encode_prompt`'s result) and precompute the
        blocks' text states: (TextContext, pooled | None). With ``guided`` the batch is doubled, the null text
        first (classifier-free guidance, one batched call); ``negative`` (one per prompt, None for the null
        text) takes the null text's place, so guidance steers away from it: v = v_neg + w·(v_text − v_neg)."""
        transformer = self.transformer
        if guided and negative is not None:  # one encoder call, so both halves pad to the same length
            first = [p if n is None else n for n, p in zip(negative, prompts)]  # None: the null text
            tokens, text_mask, pooled = self.encode_prompt(first + list(prompts), device, dtype)
            drop = torch.tensor([n is None for n in negative] + [False] * len(prompts))
            tokens, text_mask, pooled = transformer.apply_text_dropout(tokens, text_mask, pooled, drop)
            return transformer.cross_attention_states(tokens, text_mask), pooled
        tokens, text_mask, pooled = encoded or self.encode_prompt(prompts, device, dtype)
        if guided:
            drop = torch.ones(len(prompts), dtype=torch.bool)
            null = transformer.apply_text_dropout(tokens, text_mask, pooled, drop)
            tokens, text_mask = torch.cat([null[0], tokens]), torch.cat([null[1], text_mask])
            pooled = None if pooled is None else torch.cat([null[2], pooled])
        return transformer.cross_attention_states(tokens, text_mask), pooled

    def velocity_fn(self, prompts: list[str], guidance_scale: float,
                    guidance_interval: tuple[float, float] | None = None
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The guided velocity v(x, t) for these (already checked) prompts, x ``[len(prompts), C, H, W]``: the
        text is encoded and absorbed once; w = 1 skips the null branch; outside ``guidance_interval`` only the
        conditional branch runs. For samplers outside ``__call__`` (e.g.
        :func:`~genmodels.diffusion.flow.sample_flow_img2img`)."""
        transformer = self.transformer
        device, dtype = self._execution_device, transformer.dtype
        guided = guidance_scale != 1
        encoded = self.encode_prompt(prompts, device, dtype)
        context, pooled = self.prepare_text(prompts, guided, device, dtype, encoded)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return transformer(x.to(dtype), t, pooled_text=pooled, context_states=context).float()

        if not guided:
            return velocity
        conditional = None
        if guidance_interval is not None:
            cond_context, cond_pooled = self.prepare_text(prompts, False, device, dtype, encoded)

            def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return transformer(x.to(dtype), t, pooled_text=cond_pooled, context_states=cond_context).float()

        return cfg_velocity(velocity, float(guidance_scale), interval=guidance_interval, conditional_fn=conditional)

    # Call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        mask: ImageInput | None = None,
        image: ImageInput | None = None,
        output_type: str = "pil",
        callback: ProgressFn | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        guidance_interval: tuple[float, float] | None = None,
        plan_prompts: bool | None = None,
    ) -> TextToImageOutput:
        """Generate one image per prompt (or inpaint ``image`` where ``mask`` is True, the same for every prompt).

        ``generator``: one for the whole batch, or a list with one per prompt (then image i depends only on
        prompt i and ``generator[i]``, whatever the batch).

        ``guidance_scale`` w: v = v_null + w·(v_text − v_null), one batched call per step (w = 1 skips the null
        branch). ``guidance_interval=(t_lo, t_hi)`` guides only at t_lo < t ≤ t_hi and uses the prompt alone
        elsewhere (None: every step). ``plan_prompts``: rewrite prompts with the pipeline's ``prompt_planner``
        (None: when it has one and there is no mask, since a plan for the whole canvas ignores the known pixels;
        True without a planner is an error). ``callback(step, num_inference_steps)`` fires
        after every step. Raises ``ValueError`` on bad input and ``FloatingPointError`` if the model produces NaN
        / inf.
        """
        prompts, mask, image, height, width = self.check_inputs(prompt, num_inference_steps, guidance_scale, mask,
                                                                image, output_type, height, width, generator,
                                                                guidance_interval)
        if plan_prompts is None and mask is not None:  # a plan for the whole canvas would ignore the known pixels
            plan_prompts = False
        prompts = self.maybe_plan_prompts(prompts, plan_prompts, generator, min(height, width))
        transformer, device = self.transformer, self._execution_device
        batch = len(prompts)

        velocity_fn = self.velocity_fn(prompts, guidance_scale, guidance_interval)

        with self.progress_bar(total=num_inference_steps) as bar:
            def on_step(i: int, total: int) -> None:
                bar.update()
                if callback is not None:
                    callback(i, total)

            if image is None:
                out = sample_flow_scheduler(velocity_fn, (batch, transformer.config.in_channels, height, width),
                                            num_inference_steps, scheduler=self.scheduler, generator=generator,
                                            callback=on_step, device=device)
            else:
                known = torch.tensor(image).permute(2, 0, 1).float().div(127.5).sub(1)
                known = known[None].expand(batch, -1, -1, -1).to(device)
                m = torch.from_numpy(mask)[None, None].to(device=device, dtype=torch.float32)
                out = sample_flow_inpaint(velocity_fn, known, m, num_inference_steps,
                                          shift=scheduler_shift(self.scheduler), scheduler=self.scheduler,
                                          generator=generator, callback=on_step)

        return TextToImageOutput(images=to_images(out.sample, image, mask, output_type), nfe=out.nfe,
                                 prompts=prompts)
