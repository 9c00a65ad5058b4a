"""Backbones by name, with their named configurations and training objective.

``build_model("hdit", "pianoroll")`` returns a fresh model; a config may also be a path to a JSON file with
the constructor arguments. New families register one ``ModelEntry``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelEntry:
    class_path: str  # "module:ClassName"
    configs: tuple[str, ...]  # names of classmethods "<name>_config"
    objective: str  # "edm" | "flow" (training/train_dit.py) | "next-scale" (training/train_var.py)

    def model_class(self):
        module, name = self.class_path.split(":")
        return getattr(importlib.import_module(module), name)


MODELS: dict[str, ModelEntry] = {
    "hdit": ModelEntry("genmodels.hdit:HDiT", ("tiny", "pianoroll"), "edm"),
    "sana": ModelEntry("genmodels.sana:SanaDiT", ("tiny", "shapes"), "flow"),
    "dim": ModelEntry("genmodels.dim:DiffusionMamba", ("tiny", "moving_shapes", "shapes"), "flow"),
    "var": ModelEntry("genmodels.var.var:VARTransformer", ("tiny", "shapes"), "next-scale"),
}


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def model_config(name: str, config: str) -> dict:
    """Constructor arguments for ``name``: a named config (``tiny``, …) or a JSON file path."""
    entry = model_entry(name)
    if config in entry.configs:
        return getattr(entry.model_class(), f"{config}_config")()
    path = Path(config)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"model config {path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"model config {path} must hold a JSON object of constructor arguments")
        return {k: v for k, v in data.items() if not k.startswith("_")}
    raise ValueError(f"unknown config {config!r} for {name}; use one of {entry.configs} or a .json file")


def build_model(name: str, config: str = "tiny", **overrides) -> Callable:
    entry = model_entry(name)
    return entry.model_class()(**{**model_config(name, config), **overrides})
