"""Pipelines: compose a backbone, a scheduler and the sampler; they own no weights."""

from genmodels.pipelines.pianoroll import PianoRollInpaintOutput, PianoRollInpaintPipeline

__all__ = ["PianoRollInpaintOutput", "PianoRollInpaintPipeline"]
