"""Loading shipped or user-supplied pipeline folders safely.

Weights are read from safetensors only: a folder whose weights are pickles (``.bin``, ``.pt``, ``.ckpt``,
``.pth``, ``.pkl``) is refused before anything is opened, so no pickled code can run. Configs are JSON and
are checked for being JSON objects before diffusers sees them.
"""

from __future__ import annotations

import json
from pathlib import Path

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


class UnsafeCheckpointError(ValueError):
    """A checkpoint folder that would need unpickling, or that is malformed."""


def check_pipeline_folder(path: str | Path) -> Path:
    """Validate a diffusers pipeline folder: model_index.json, JSON configs, safetensors weights only."""
    root = Path(path)
    index = root / "model_index.json"
    if not index.is_file():
        raise UnsafeCheckpointError(f"{root} is not a pipeline folder (no model_index.json)")
    for cfg in [index, *root.glob("*/*config.json")]:
        try:
            data = json.loads(cfg.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UnsafeCheckpointError(f"{cfg} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise UnsafeCheckpointError(f"{cfg} must hold a JSON object")
    pickles = sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeCheckpointError(
            f"refusing {root}: weights must be safetensors, found pickle files {', '.join(map(str, pickles))}")
    for sub in root.iterdir():  # model components keep config.json (schedulers: scheduler_config.json)
        if (sub / "config.json").is_file() and not any(sub.glob("*.safetensors")):
            raise UnsafeCheckpointError(f"{sub} has a model config but no .safetensors weights")
    return root


def load_pipeline(cls, path: str | Path, **kwargs):
    """``cls.from_pretrained(path)`` after :func:`check_pipeline_folder`, with ``use_safetensors=True``.

    Whatever goes wrong while loading (a config value of the wrong type, truncated weights, shapes that do not
    match the config) is raised as :class:`UnsafeCheckpointError` naming the folder, never as another type."""
    root = check_pipeline_folder(path)
    try:
        return cls.from_pretrained(str(root), use_safetensors=True, **kwargs)
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # diffusers, safetensors and the model constructors raise many types on bad folders
        raise UnsafeCheckpointError(f"cannot load the pipeline in {root}: {type(err).__name__}: {err}") from err
