"""Text encoders for conditioning: ``encode(prompts) -> (tokens [B, L, D], mask [B, L], pooled [B, P])``."""

from .clip import CLIPTextEncoder, TextEncoderError
from .joint import TextTrainedModel, unwrap_text_trained

__all__ = ["CLIPTextEncoder", "TextEncoderError", "TextTrainedModel", "unwrap_text_trained"]
