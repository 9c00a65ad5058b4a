"""Datasets by name: ``build_dataset("pianoroll", "train", width=128)``.

``DATASETS`` maps a name to a factory ``(split, **kwargs) -> torch Dataset``; register new ones there. The
factories import their module on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset


def _pianoroll(split: str, **kwargs) -> Dataset:
    from genmodels.data.pianoroll import PianoRollDataset

    return PianoRollDataset(split=split, **kwargs)


def _shapes(split: str, **kwargs) -> Dataset:
    from genmodels.data.shapes import ShapesDataset

    return ShapesDataset(split=split, **kwargs)


def _moving_shapes(split: str, **kwargs) -> Dataset:
    from genmodels.data.moving_shapes import MovingShapesDataset

    return MovingShapesDataset(split=split, **kwargs)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "pianoroll": _pianoroll,
    "shapes": _shapes,
    "moving_shapes": _moving_shapes,
}


def build_dataset(name: str, split: str, **kwargs) -> Dataset:
    """The dataset registered as ``name``, for ``split`` ("train" or "val"), built with ``kwargs``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    try:
        return DATASETS[name](split=split, **kwargs)
    except TypeError as err:  # an unknown keyword, or a value of the wrong type (kwargs often come from JSON)
        raise ValueError(f"bad arguments for the {name} dataset {kwargs}: {err}") from err
