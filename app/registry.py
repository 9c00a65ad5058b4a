"""Models by name, loaded on first use and shared by every later request.

``ModelRegistry.get("pianoroll")`` loads the pipeline folder ``settings.model_dir("pianoroll")`` once (under a
per-model lock, so concurrent first requests load it once) and returns the cached pipeline afterwards. A
missing folder is a ``gr.Error`` that says how to build it. ``get("image", folder)`` loads another folder of the
same kind (the Image tab offers every text-to-image folder it finds); each folder is cached once. ``get("var")`` is
the Image tab's VAR (next-scale prediction) text-to-image pipeline, a ``VARPipeline``. ``get("video")``
is the Video tab's text-to-video pipeline; ``get("clip")`` the CLIP verifier of the test-time search (an open_clip
folder, marked by ``open_clip_config.json`` instead of ``model_index.json``).
"""

from __future__ import annotations

import json
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


def _load_text_pipeline(cls: type, folder: Path, device: str) -> Any:
    from genmodels.loading import load_pipeline

    kind = pipeline_class(folder)
    if kind != cls.__name__:
        raise ValueError(f"{folder} holds a {kind or 'unnamed'} pipeline, not a {cls.__name__}")
    pipe = load_pipeline(cls, folder)  # safetensors only; pickled weights are refused
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_text_to_image(folder: Path, device: str) -> Any:
    from genmodels.pipelines.text_to_image import TextToImagePipeline

    return _load_text_pipeline(TextToImagePipeline, folder, device)


def load_var(folder: Path, device: str) -> Any:
    from genmodels.pipelines.var import VARPipeline

    return _load_text_pipeline(VARPipeline, folder, device)


def load_text_to_video(folder: Path, device: str) -> Any:
    from genmodels.pipelines.text_to_video import TextToVideoPipeline

    return _load_text_pipeline(TextToVideoPipeline, folder, device)


def load_clip(folder: Path, device: str) -> Any:
    from genmodels.search import CLIPScoreVerifier

    try:
        return CLIPScoreVerifier.from_folder(folder, device=device)
    except (OSError, RuntimeError, KeyError) as err:  # a damaged folder is the user's to fix, not a crash
        raise ValueError(f"cannot load the CLIP verifier in {folder}: {err}") from err


def pipeline_class(folder: Path) -> str | None:
    """The ``_class_name`` in ``folder/model_index.json`` (None when it is missing or unreadable)."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    name = index.get("_class_name") if isinstance(index, dict) else None
    return name if isinstance(name, str) else None


LOADERS: dict[str, Loader] = {"pianoroll": load_pianoroll, "image": load_text_to_image, "var": load_var,
                              "video": load_text_to_video, "clip": load_clip}


class ModelRegistry:
    """Lazy, thread-safe cache of pipelines keyed by model name."""

    def __init__(self, settings: Settings, loaders: dict[str, Loader] | None = None):
        self.settings = settings
        self.loaders = dict(LOADERS if loaders is None else loaders)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.loaders}

    def _key(self, name: str, folder: str | Path | None) -> tuple[str, Path]:
        """Cache key of model ``name`` loaded from ``folder`` (default: its configured folder) and that folder:
        the configured folder is cached as ``name``, another one as ``name:folder``."""
        default = self.settings.model_dir(name)
        folder = default if folder is None else Path(folder)
        return (name if folder == default else f"{name}:{folder}"), folder

    def is_available(self, name: str, folder: str | Path | None = None) -> bool:
        """Whether model ``name`` (from ``folder``, default its configured one) has a pipeline folder (without
        loading it)."""
        key, folder = self._key(name, folder)
        return key in self._models or (folder / MODELS[name].index_file).is_file()

    def loaded(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str, folder: str | Path | None = None) -> Any:
        """The pipeline ``name`` (from ``folder``, default ``settings.model_dir(name)``), loading it on first use."""
        if name not in self.loaders:
            raise KeyError(f"unknown model {name!r}; known: {sorted(self.loaders)}")
        key, folder = self._key(name, folder)
        if key in self._models:
            return self._models[key]
        with self._locks[name]:
            if key not in self._models:  # another thread may have loaded it while this one waited
                spec = MODELS[name]
                if not (folder / spec.index_file).is_file():
                    raise gr.Error(f"the {spec.title} model is not installed: no model folder at {folder}. "
                                   f"Build it with `{spec.build_command}` (or point LINGEN_{name.upper()}_MODEL "
                                   "at one).", print_exception=False)
                t0 = time.perf_counter()
                self._models[key] = self.loaders[name](folder, self.settings.device)
                log.info("loaded model %s from %s in %.1f s", name, folder, time.perf_counter() - t0)
        return self._models[key]
