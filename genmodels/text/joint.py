"""Train a text encoder together with the generator that reads it.

A CLIP text tower trained on captions of still images can encode two captions that differ in one word of motion
or relation as nearly the same tokens ("moving left" / "moving right": pooled cosine 0.99 with the shipped tiny
CLIP), and a frozen encoder then hides that word from the generator however long the generator trains. Wrapping
both in :class:`TextTrainedModel` lets the generator's own loss shape the text side: the training loop optimises,
averages (EMA) and checkpoints the pair as one module, and :class:`~genmodels.diffusion.objectives.TextConditioned`
encodes the captions through the wrapped encoder (found by :func:`unwrap_text_trained`), with gradients.

The pair saves as an ordinary pipeline (the transformer and its own fine-tuned ``text_encoder``), so nothing
downstream needs to know it was trained jointly.

Measured on the moving-shapes video model (BENCHMARKS.md, issue 6): the flow loss sharpens the words the model
already reads (colour and shape captions move apart) but does not separate "left" from "right". A model that
ignores a word sends no gradient towards telling it apart, so this helps a word only once the model uses it.
"""

from __future__ import annotations

import torch
from torch import nn

from .clip import CLIPTextEncoder


class TextTrainedModel(nn.Module):
    """``transformer`` + a trainable ``text_encoder``; calling it calls the transformer.

    Args:
        transformer: the generator (its ``param_groups(lr, weight_decay)`` is used when it has one).
        text_encoder: a :class:`~genmodels.text.CLIPTextEncoder`; its weights become trainable.
        text_lr_scale: the text encoder's learning rate as a multiple of the transformer's (> 0).
    """

    def __init__(self, transformer: nn.Module, text_encoder: CLIPTextEncoder, text_lr_scale: float = 0.5):
        super().__init__()
        if not isinstance(text_encoder, CLIPTextEncoder):
            raise TypeError(f"text_encoder must be a CLIPTextEncoder, got {type(text_encoder).__name__}")
        if not text_lr_scale > 0:
            raise ValueError(f"text_lr_scale must be > 0, got {text_lr_scale}")
        self.transformer = transformer
        self.text_encoder = text_encoder.requires_grad_(True)
        self.text_lr_scale = float(text_lr_scale)

    def forward(self, *args, **kwargs):
        return self.transformer(*args, **kwargs)

    def param_groups(self, base_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """The transformer's groups, then one group for the text encoder at ``base_lr · text_lr_scale``
        (weight decay on its matrices only)."""
        if hasattr(self.transformer, "param_groups"):
            groups = self.transformer.param_groups(base_lr, weight_decay)
        else:
            groups = [{"name": "transformer", "lr": base_lr, "weight_decay": weight_decay,
                       "params": [p for p in self.transformer.parameters() if p.requires_grad]}]
        decay, no_decay = [], []
        for name, p in self.text_encoder.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
        lr = base_lr * self.text_lr_scale
        groups.append({"name": "text_wd", "params": decay, "lr": lr, "weight_decay": weight_decay})
        groups.append({"name": "text_no_wd", "params": no_decay, "lr": lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    @staticmethod
    def split_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """A saved pair's state dict → (transformer state, text-encoder state), prefixes removed."""
        parts: tuple[dict, dict] = ({}, {})
        for key, value in state.items():
            for part, prefix in zip(parts, ("transformer.", "text_encoder.")):
                if key.startswith(prefix):
                    part[key[len(prefix):]] = value
                    break
            else:
                raise KeyError(f"{key!r} belongs to neither the transformer nor the text encoder")
        return parts


def unwrap_text_trained(model: nn.Module) -> tuple[nn.Module, CLIPTextEncoder | None]:
    """(transformer, trained text encoder) of a :class:`TextTrainedModel` (also inside a DDP wrapper), else
    ``(model, None)``."""
    inner = getattr(model, "module", model)
    if isinstance(inner, TextTrainedModel):
        return inner.transformer, inner.text_encoder
    return model, None


__all__ = ["TextTrainedModel", "unwrap_text_trained"]
