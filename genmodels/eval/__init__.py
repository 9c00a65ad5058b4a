"""Evaluation: metrics and scorers. ``music_metrics`` scores piano-roll inpainting; ``shapes_oracle`` scores
shapes-world images against their captions (GenEval-style categories)."""
