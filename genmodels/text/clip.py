"""CLIP text encoder: per-token and pooled features from an open_clip text tower, for text conditioning.

``CLIPTextEncoder.encode(prompts) -> (tokens [B, L, width], mask [B, L] bool, pooled [B, embed_dim])``:

- ``tokens``: the text transformer's final-LayerNorm outputs, one row per position of open_clip's tokenizer
  (``<start>`` caption ``<end>`` then padding, L = the model's context length);
- ``mask``: True from ``<start>`` to ``<end>`` inclusive (padding is False);
- ``pooled``: the projected ``<end>``-token feature, L2-normalised: CLIP's text embedding, the one the
  contrastive loss compares with the image embedding.

Three ways in, one module:

- ``CLIPTextEncoder(model_cfg)``: a fresh text tower from an open_clip model config (a dict with ``embed_dim``,
  ``text_cfg`` and, ignored here, ``vision_cfg``); ``CLIPTextEncoder.from_clip(clip_model, model_cfg)`` takes
  the text tower of a trained ``open_clip.CLIP`` (what ``training/train_clip.py`` does).
- ``from_pretrained(folder)`` / ``save_pretrained(folder)``: the diffusers layout (``config.json`` +
  safetensors), so the encoder is a pipeline component like any model.
- ``from_open_clip(name_or_path, pretrained=None)``: a real open_clip model, by folder (open_clip's
  ``open_clip_config.json`` + safetensors layout, as ``assets/clip-shapes`` ships) or by built-in name with a
  ``pretrained`` tag or local weights file. Only a tag downloads, and only because the caller asked for it.

The encoder is frozen (``requires_grad_(False)``, eval mode); ``encode`` runs without gradients.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
             "logit_scale", "logit_bias")
MAX_PROMPTS = 4096


class TextEncoderError(ValueError):
    """Bad prompts, or an open_clip model this wrapper cannot serve."""


def _import_open_clip():
    import open_clip  # imports torchvision: keep it out of module import time

    return open_clip


def _text_state(state: dict) -> dict:
    """The text-tower entries of an open_clip state dict (``CLIP`` keys, or ``CustomTextCLIP``'s ``text.*``)."""
    state = {k.removeprefix("text."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k.split(".")[0] in TEXT_KEYS}


def _check_model_cfg(model_cfg: dict) -> dict:
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("text_cfg"), dict) \
            or "embed_dim" not in model_cfg:
        raise TextEncoderError("model_cfg must be an open_clip model config with 'embed_dim' and 'text_cfg'")
    text_cfg = model_cfg["text_cfg"]
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise TextEncoderError("Hugging Face text towers are not supported; use an open_clip model with the "
                               "built-in CLIP text transformer and tokenizer")
    return model_cfg


class CLIPTextEncoder(ModelMixin, ConfigMixin):
    """The text half of an open_clip ``CLIP`` (token embedding, causal transformer, final LayerNorm, projection)
    plus its tokenizer. ``model_cfg`` is the open_clip model config; only ``embed_dim`` and ``text_cfg`` matter."""

    @register_to_config
    def __init__(self, model_cfg: dict):
        super().__init__()
        open_clip = _import_open_clip()
        model_cfg = _check_model_cfg(model_cfg)
        text = open_clip.model._build_text_tower(model_cfg["embed_dim"], model_cfg["text_cfg"],
                                                 quick_gelu=bool(model_cfg.get("quick_gelu", False)))
        # The same attribute names as open_clip.CLIP, so state dicts move between the two unchanged.
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.context_length = int(self.positional_embedding.shape[0])
        self.tokenizer = open_clip.SimpleTokenizer(context_length=self.context_length)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def tiny_config(cls) -> dict:
        """A one-layer, 32-wide text tower for tests (random weights; the vocabulary is open_clip's)."""
        return {"model_cfg": {"embed_dim": 32, "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                                                             "heads": 2, "layers": 1, "mlp_ratio": 2.0}}}

    @property
    def width(self) -> int:
        """Per-token feature width (``text_cfg.width``)."""
        return int(self.ln_final.weight.shape[0])

    @property
    def embed_dim(self) -> int:
        """Pooled feature width (the CLIP embedding)."""
        return int(self.config.model_cfg["embed_dim"])

    def extra_repr(self) -> str:
        return f"width={self.width}, embed_dim={self.embed_dim}, context_length={self.context_length}"

    def train(self, mode: bool = True):  # frozen: always in eval mode
        return super().train(False)

    # Construction from open_clip

    @classmethod
    def from_clip(cls, clip_model: nn.Module, model_cfg: dict) -> CLIPTextEncoder:
        """The text tower of a trained ``open_clip.CLIP`` built from ``model_cfg`` (weights copied)."""
        encoder = cls(model_cfg=model_cfg)
        state = _text_state(clip_model.state_dict())
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or [k for k in unexpected if not k.startswith(("logit_scale", "logit_bias"))]:
            raise TextEncoderError(f"the CLIP model does not match model_cfg: missing {missing}, "
                                   f"unexpected {unexpected}")
        return encoder

    @classmethod
    def from_open_clip(cls, name_or_path: str | Path, pretrained: str | None = None) -> CLIPTextEncoder:
        """A real open_clip model's text tower: a local folder in open_clip's layout (``open_clip_config.json``
        with ``model_cfg`` + ``open_clip_model.safetensors``), or a built-in model name with ``pretrained``
        (a local weights file, or a tag, which open_clip downloads: asked for explicitly by the caller)."""
        open_clip = _import_open_clip()
        path = Path(name_or_path)
        if path.is_dir():
            config_path = path / OPEN_CLIP_CONFIG
            if not config_path.is_file():
                raise TextEncoderError(f"{path} is not an open_clip folder (no {OPEN_CLIP_CONFIG})")
            try:
                model_cfg = json.loads(config_path.read_text())["model_cfg"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise TextEncoderError(f"{config_path} must be JSON with a 'model_cfg' object: {err}") from err
            weights = sorted(path.glob("*.safetensors"))
            if not weights:
                raise TextEncoderError(f"{path} has no .safetensors weights (pickled weights are not loaded)")
            from safetensors.torch import load_file

            encoder = cls(model_cfg=_check_model_cfg(model_cfg))
            state = _text_state(load_file(str(weights[0])))
            missing, _ = encoder.load_state_dict(state, strict=False)
            if missing:
                raise TextEncoderError(f"{weights[0]} lacks text-tower weights: {missing[:5]}")
            return encoder
        name = str(name_or_path)
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise TextEncoderError(f"{name!r} is neither an open_clip folder nor a built-in model name")
        if pretrained is None:
            raise TextEncoderError(f"give pretrained= (a weights file or a tag) for the built-in model {name!r}")
        clip_model = open_clip.create_model(name, pretrained=pretrained, device="cpu")
        return cls.from_clip(clip_model.float(), _check_model_cfg(model_cfg))

    # Encoding

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """open_clip token ids ``[B, context_length]`` (long); over-long prompts are cut, keeping ``<end>``."""
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts \
                or not all(isinstance(p, str) for p in prompts):
            raise TextEncoderError("prompts must be a non-empty list of strings")
        if len(prompts) > MAX_PROMPTS:
            raise TextEncoderError(f"at most {MAX_PROMPTS} prompts per call, got {len(prompts)}")
        return self.tokenizer(list(prompts))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids ``[B, L]`` → (per-token features ``[B, L, width]``, mask ``[B, L]``, pooled ``[B, embed_dim]``
        L2-normalised). The ``<end>`` token has the largest id, as in open_clip's ``argmax`` pooling."""
        dtype = self.ln_final.weight.dtype
        x = self.token_embedding(ids).to(dtype) + self.positional_embedding.to(dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        eot = ids.argmax(dim=-1)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot[:, None]
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled) if isinstance(self.text_projection, nn.Linear) \
                else pooled @ self.text_projection
        return x, mask, F.normalize(pooled, dim=-1)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts → (tokens ``[B, L, width]``, mask ``[B, L]`` bool, pooled ``[B, embed_dim]``), on the encoder's
        device, in its dtype. The encoder is frozen, so this builds no autograd graph; one made trainable
        (:class:`~genmodels.text.TextTrainedModel`) passes gradients through it."""
        ids = self.tokenize(prompts).to(self.ln_final.weight.device)
        return self(ids)
