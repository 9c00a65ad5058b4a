"""Models by name, loaded on first use and shared by every later request.

``ModelRegistry.get("pianoroll")`` loads the pipeline folder ``settings.model_dir("pianoroll")`` once (under a
per-model lock, so concurrent first requests load it once) and returns the cached pipeline afterwards. A
missing folder is a ``gr.Error`` that says how to build it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from app.settings import MODELS, Settings

log = logging.getLogger("app")

Loader = Callable[[Path, str], Any]  # (pipeline folder, device) -> pipeline


def load_pianoroll(folder: Path, device: str) -> Any:
    from genmodels.loading import load_pipeline
    from genmodels.pipelines import PianoRollInpaintPipeline

    pipe = load_pipeline(PianoRollInpaintPipeline, folder)  # safetensors only; pickled weights are refused
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


LOADERS: dict[str, Loader] = {"pianoroll": load_pianoroll}


class ModelRegistry:
    """Lazy, thread-safe cache of pipelines keyed by model name."""

    def __init__(self, settings: Settings, loaders: dict[str, Loader] | None = None):
        self.settings = settings
        self.loaders = dict(LOADERS if loaders is None else loaders)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.loaders}

    def is_available(self, name: str) -> bool:
        """Whether model ``name`` has a pipeline folder (without loading it)."""
        return name in self._models or (self.settings.model_dir(name) / "model_index.json").is_file()

    def loaded(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> Any:
        """The pipeline ``name``, loading it on first use."""
        if name in self._models:
            return self._models[name]
        if name not in self.loaders:
            raise KeyError(f"unknown model {name!r}; known: {sorted(self.loaders)}")
        with self._locks[name]:
            if name not in self._models:  # another thread may have loaded it while this one waited
                folder = self.settings.model_dir(name)
                if not (folder / "model_index.json").is_file():
                    spec = MODELS[name]
                    raise gr.Error(f"the {spec.title} model is not installed: no pipeline folder at {folder}. "
                                   f"Build it with `{spec.build_command}` (or point LINGEN_{name.upper()}_MODEL "
                                   "at one).", print_exception=False)
                t0 = time.perf_counter()
                self._models[name] = self.loaders[name](folder, self.settings.device)
                log.info("loaded model %s from %s in %.1f s", name, folder, time.perf_counter() - t0)
        return self._models[name]
