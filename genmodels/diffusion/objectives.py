"""Training objectives: ``objective(model, batch, generator) -> per-sample loss [B]``.

The training loop only knows this interface, so every backbone family plugs in its own formulation
(EDM here; rectified flow for the SANA-style DiT).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..text.joint import unwrap_text_trained
from .edm import KarrasDenoiser, SigmaSampler
from .noise import assign_noise, item_generators, nearest_of_k_noise, training_noise
from .sampling import _randn


@dataclass
class EDMObjective:
    """Karras preconditioning + loss weighting (soft-min-SNR by default) + a σ distribution.

    ``cond_keys`` maps batch keys to model keyword arguments (e.g. ``{"class_labels": "class_labels"}``).
    ``immiscible`` is ``none``, ``knn`` (nearest of ``immiscible_k`` noise draws) or ``assign`` (batch linear
    assignment; with ``batch["global_batch"]`` (a :class:`~.noise.GlobalBatch`) over the batch of all processes).
    """

    sigma_sampler: SigmaSampler = field(default_factory=SigmaSampler)
    weighting: str = "soft-min-snr"
    immiscible: str = "none"
    immiscible_k: int = 4
    cond_keys: dict[str, str] = field(default_factory=dict)

    def __call__(self, model, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = batch["pixel_values"]
        if "noise_seed" in batch:  # one generator per item: results do not depend on how items are batched
            gens = item_generators(batch["noise_seed"])
            u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
            sigma = self.sigma_sampler.from_uniform(u).to(x0.device, torch.float32)
            if self.immiscible == "assign":
                # each item draws its own Gaussian; the linear assignment then re-pairs noise with images over
                # the global batch (all processes, when the loop passes ``global_batch``). Only the noise is
                # permuted: σ and the conditioning stay with their image.
                noise = assign_noise(x0, _randn(x0.shape, gens, x0), batch.get("global_batch"))
            else:
                k = self.immiscible_k if self.immiscible == "knn" else 1
                noise = torch.cat([nearest_of_k_noise(x0[i : i + 1], k, generator=g) for i, g in enumerate(gens)])
        else:
            sigma = self.sigma_sampler(x0.shape[0], generator=generator, device=x0.device)
            noise = training_noise(x0, self.immiscible, self.immiscible_k, generator=generator)
        cond = {arg: batch[key] for arg, key in self.cond_keys.items() if key in batch}
        return KarrasDenoiser(model, weighting=self.weighting).loss(x0, noise, sigma, **cond)

    def for_evaluation(self) -> EDMObjective:
        """The objective held-out losses use: plain Gaussian noise. Immiscible noise selection is a training
        device; a loss under selected noise would not compare with a plain run's."""
        return replace(self, immiscible="none")


class TextConditioned:
    """Wrap an objective so that ``batch["caption"]`` (a list of strings) reaches the model as text features.

    ``text_encoder.encode(captions) -> (tokens [B, L, D], mask [B, L], pooled [B, P])`` runs frozen, without
    gradients, on the batch's device; the objective then sees ``encoder_hidden_states``,
    ``encoder_attention_mask`` and (when ``use_pooled``) ``pooled_text``. Caption dropout for classifier-free
    guidance stays the wrapped objective's job. A model that trains its own text encoder
    (:class:`~genmodels.text.TextTrainedModel`) has the captions encoded by that encoder, with gradients.
    """

    def __init__(self, objective, text_encoder, *, use_pooled: bool = True):
        self.objective, self.text_encoder, self.use_pooled = objective, text_encoder, use_pooled

    def __call__(self, model, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        captions = batch.get("caption")
        if captions is None:
            raise KeyError("a text-conditioned objective needs batch['caption'] (a list of strings)")
        trained = unwrap_text_trained(model)[1]
        tokens, mask, pooled = self._encode(list(captions), trained, batch["pixel_values"].device)
        batch = {**batch, "encoder_hidden_states": tokens, "encoder_attention_mask": mask,
                 "pooled_text": pooled if self.use_pooled else None}
        if batch.get("layout_phrases") is not None and not torch.is_tensor(batch["layout_phrases"]):
            batch["layout_phrases"] = self.encode_phrases(batch, trained)
        return self.objective(model, batch, generator)

    def _encode(self, texts: list[str], trained, device):
        """``encode(texts)`` by the model's own trained encoder (with gradients) or the frozen one (moved to
        ``device`` once, without gradients)."""
        if trained is not None:
            return trained.encode(texts)
        if next(self.text_encoder.parameters()).device != device:
            self.text_encoder.to(device)
        with torch.no_grad():
            return self.text_encoder.encode(texts)

    def encode_phrases(self, batch: dict, trained=None) -> torch.Tensor:
        """``batch["layout_phrases"]`` (per item, the objects' noun phrases joined by "|", as many as
        ``layout_valid`` marks, in ``layout_boxes`` order) → pooled text ``[B, K, P]`` (zeros for absent
        objects), from the same encoder as the captions."""
        valid = batch["layout_valid"].bool()
        b, k = valid.shape
        phrases = [p for line in batch["layout_phrases"] for p in line.split("|") if p]
        if len(phrases) != int(valid.sum()):
            raise ValueError(f"layout_phrases name {len(phrases)} objects, layout_valid marks {int(valid.sum())}")
        pooled = self._encode(phrases, trained, valid.device)[2]
        out = pooled.new_zeros(b, k, pooled.shape[-1])
        out[valid.to(pooled.device)] = pooled
        return out

    def for_evaluation(self) -> TextConditioned:
        inner = getattr(self.objective, "for_evaluation", None)
        return TextConditioned(inner(), self.text_encoder, use_pooled=self.use_pooled) if inner else self
