"""Text-to-image, zero-shot inpainting and outpainting with VAR next-scale prediction.

Components: ``transformer`` (:class:`~genmodels.var.var.VARTransformer`), ``vqvae``
(:class:`~genmodels.var.vqvae.MultiScaleVQVAE`, the tokenizer and decoder) and ``text_encoder`` (``encode(prompts)
-> (tokens, mask, pooled)``, as for the diffusion pipelines). One image costs one transformer pass per scale
(six for the shapes model) plus one decoder call.

In- / outpainting (``image`` + ``mask``, True / white = generate): the image is tokenised; a latent cell is known
when none of its pixels is to be generated; the known tokens are forced at every scale (VAR's zero-shot editing,
no retraining), and the known pixels are copied into the output bit-exactly. Outpainting is the same call with
the mask covering the outside.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

import genmodels.text.clip  # noqa: F401  (diffusers loads components only from imported modules)
import genmodels.var.var  # noqa: F401
import genmodels.var.vqvae  # noqa: F401
from genmodels.var import defaults
from genmodels.var.var import FastVARConfig, sample_var

from .text_to_image import (
    ImageInput,
    ProgressFn,
    TextToImageOutput,
    TextToImagePipeline,
    check_guidance,
    check_prompts,
    image_to_array,
    mask_to_array,
    to_images,
)

MAX_TOP_K = 1_000_000


class VARPipeline(DiffusionPipeline):
    """VARTransformer (``transformer``) + MultiScaleVQVAE (``vqvae``) + text encoder (``text_encoder``)."""

    model_cpu_offload_seq = "transformer->vqvae"
    accepts_generator_list = True
    _optional_components = ["text_encoder"]

    def __init__(self, transformer, vqvae, text_encoder=None):
        super().__init__()
        self.register_modules(transformer=transformer, vqvae=vqvae, text_encoder=text_encoder)

    @property
    def default_size(self) -> int:
        return int(self.vqvae.config.sample_size)

    encode_prompt = TextToImagePipeline.encode_prompt

    def check_inputs(self, prompt, guidance_scale, top_k, top_p, mask, image, output_type, height, width,
                     generator, fastvar) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
        prompts = check_prompts(prompt)
        check_guidance(guidance_scale, generator, len(prompts))
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be an integer ≥ 0 (0 = off), got {top_k!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1] (1 = off), got {top_p!r}")
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        if fastvar is not None and not isinstance(fastvar, FastVARConfig):
            raise ValueError("fastvar must be a FastVARConfig (or None)")
        if fastvar is not None:
            fastvar.resolved(self.transformer.num_scales, len(self.transformer.blocks))
        side = self.default_size
        for name, value in (("height", height), ("width", width)):
            if value is not None and value != side:
                raise ValueError(f"{name} must be {side} (the VAR model's size; its scale schedule is fixed), "
                                 f"got {value!r}")
        if (mask is None) != (image is None):
            raise ValueError("inpainting needs both image and mask (True / white = generate); give both or neither")
        if image is not None:
            image, mask = image_to_array(image), mask_to_array(mask)
            if image.shape[:2] != (side, side):
                raise ValueError(f"image must be {side}×{side}, got {image.shape[1]}×{image.shape[0]}")
            if mask.shape != image.shape[:2]:
                raise ValueError(f"mask is {mask.shape[1]}×{mask.shape[0]} but image is "
                                 f"{image.shape[1]}×{image.shape[0]} (width×height); they must match")
            if not mask.any():
                raise ValueError("the mask covers nothing: mark the region to generate (True / white)")
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text_encoder; pass one with encode(prompts) -> "
                             "(tokens, mask, pooled)")
        return list(prompts), mask, image

    def known_tokens(self, image: np.ndarray, mask: np.ndarray, batch: int, device):
        """(token pyramid of ``image``, latent keep-mask ``[B, p_K, p_K]``: cells with no pixel to generate)."""
        pixels = torch.tensor(image).permute(2, 0, 1).float().div(127.5).sub(1)[None].to(device)
        ids = self.vqvae.images_to_ids(pixels.to(self.vqvae.dtype))
        side = self.vqvae.quantize.side
        generate = F.adaptive_max_pool2d(torch.tensor(mask)[None, None].float(), side)[0, 0] > 0
        keep = (~generate).to(device)[None].expand(batch, -1, -1)
        return [i.expand(batch, -1, -1) for i in ids], keep

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        guidance_scale: float = defaults.GUIDANCE,
        top_k: int = defaults.TOP_K,
        top_p: float = defaults.TOP_P,
        generator: torch.Generator | list[torch.Generator] | None = None,
        mask: ImageInput | None = None,
        image: ImageInput | None = None,
        output_type: str = "pil",
        callback: ProgressFn | None = None,
        *,
        fastvar: FastVARConfig | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> TextToImageOutput:
        """Generate one image per prompt (or in/outpaint ``image`` where ``mask`` is True).

        ``guidance_scale``: VAR's CFG, ramped linearly from 0 at the first scale to this value at the last
        (0 = no guidance, no null branch). ``top_k`` (0 = off) then ``top_p`` (1 = off) filter each token's
        distribution. ``generator``: one for the batch, or one per prompt (then image i depends only on prompt i
        and ``generator[i]``). ``fastvar``: cached token pruning at the largest scales. ``callback(scale,
        scales)`` fires after every scale. Raises ``ValueError`` on bad input, ``FloatingPointError`` on NaN."""
        prompts, mask, image = self.check_inputs(prompt, guidance_scale, top_k, top_p, mask, image, output_type,
                                                 height, width, generator, fastvar)
        if isinstance(generator, (list, tuple)):
            parts = [self(p, guidance_scale, top_k, top_p, g, mask, image, "np", callback, fastvar=fastvar)
                     for p, g in zip(prompts, generator)]
            images = np.concatenate([part.images for part in parts])
            out = [PIL.Image.fromarray(a) for a in images] if output_type == "pil" else images
            return TextToImageOutput(images=out, nfe=max(part.nfe for part in parts))  # per image, as batched
        device, dtype = self._execution_device, self.transformer.dtype
        batch = len(prompts)
        tokens, text_mask, pooled = self.encode_prompt(prompts, device, dtype)
        if pooled is None:
            pooled = self.transformer.null_pooled_embedding.expand(batch, -1)
        known_ids = known_mask = None
        if image is not None:
            known_ids, known_mask = self.known_tokens(image, mask, batch, device)
        scales = self.transformer.num_scales - (fastvar.skip_last if fastvar is not None else 0)
        with self.progress_bar(total=scales) as bar:
            def on_scale(i: int, total: int) -> None:
                bar.update()
                if callback is not None:
                    callback(i, total)

            out = sample_var(self.transformer, self.vqvae.quantize, encoder_hidden_states=tokens,
                             encoder_attention_mask=text_mask, pooled_text=pooled, cfg=float(guidance_scale),
                             top_k=int(top_k), top_p=float(top_p), generator=generator, known_ids=known_ids,
                             known_mask=known_mask, fastvar=fastvar, progress=on_scale)
        images = to_images(self.vqvae.decode_fhat(out.f_hat), image, mask, output_type)
        return TextToImageOutput(images=images, nfe=out.passes)


__all__ = ["VARPipeline"]
