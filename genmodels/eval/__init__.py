"""Evaluation: metrics and scorers. ``music_metrics`` scores piano-roll inpainting."""
