"""Text encoders for conditioning: ``encode(prompts) -> (tokens [B, L, D], mask [B, L], pooled [B, P])``."""

from .clip import CLIPTextEncoder, TextEncoderError

__all__ = ["CLIPTextEncoder", "TextEncoderError"]
