"""VAR's training objective: teacher-forced next-scale cross-entropy on the frozen tokenizer's token pyramid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .var import VARTransformer
from .vqvae import MultiScaleVQVAE


class VARObjective:
    """``objective(model, batch, generator) -> [B]`` per-sample loss for :func:`training.loop.train`.

    The frozen ``vqvae`` turns ``batch["pixel_values"]`` into the token pyramid and the teacher-forced inputs
    (f̂ of the coarser scales, area-downsampled); ``text_encoder`` (frozen) turns ``batch["caption"]`` into
    tokens, mask and pooled vector; a ``text_drop_prob`` fraction of captions is replaced by the null text
    (classifier-free guidance). The loss is the per-token cross-entropy with uniform weight 1/L over all L
    tokens of all scales, as in the reference.
    """

    def __init__(self, vqvae: MultiScaleVQVAE, text_encoder, text_drop_prob: float = 0.1):
        if not 0 <= text_drop_prob <= 1:
            raise ValueError(f"text_drop_prob must be in [0, 1], got {text_drop_prob}")
        self.vqvae, self.text_encoder, self.text_drop_prob = vqvae.eval().requires_grad_(False), text_encoder, \
            float(text_drop_prob)

    def check_model(self, model: VARTransformer) -> None:
        q = self.vqvae.quantize
        if model.patch_nums != q.patch_nums or model.config.vocab_size != q.vocab_size \
                or model.config.latent_channels != q.dim:
            raise ValueError(f"transformer (scales {model.patch_nums}, V = {model.config.vocab_size}, C_vae = "
                             f"{model.config.latent_channels}) does not match the tokenizer (scales {q.patch_nums}, "
                             f"V = {q.vocab_size}, C_vae = {q.dim})")

    @torch.no_grad()
    def prepare(self, batch: dict) -> dict:
        images = batch["pixel_values"]
        device = images.device
        if next(self.vqvae.parameters()).device != device:
            self.vqvae.to(device)
        if next(self.text_encoder.parameters()).device != device:
            self.text_encoder.to(device)
        ids = self.vqvae.images_to_ids(images)
        tokens, mask, pooled = self.text_encoder.encode(list(batch["caption"]))
        return {"inputs": self.vqvae.quantize.teacher_inputs(ids), "target": torch.cat([i.flatten(1) for i in ids], 1),
                "tokens": tokens.to(device), "mask": None if mask is None else mask.to(device),
                "pooled": pooled.to(device)}

    def __call__(self, model, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        prep = self.prepare(batch)
        b = prep["target"].shape[0]
        drop = torch.rand(b, generator=generator) < self.text_drop_prob
        logits = model(prep["inputs"], prep["tokens"], prep["mask"], prep["pooled"], drop_text=drop)
        loss = F.cross_entropy(logits.flatten(0, 1), prep["target"].flatten(), reduction="none")
        return loss.view(b, -1).mean(1)


__all__ = ["VARObjective"]
