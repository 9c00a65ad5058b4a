"""Settings of the web app: where models live, where served files go, and the limits on requests.

Read from the environment by ``Settings.from_env()``; tests build one directly.

Environment:
    LINGEN_ASSETS_DIR          folder holding the shipped models (default: the repository's ``assets/``)
    LINGEN_<NAME>_MODEL        one model's pipeline folder, e.g. ``LINGEN_PIANOROLL_MODEL=/path/to/pipeline``;
                               ``LINGEN_IMAGE_MODEL`` is the Image tab's default text-to-image pipeline (default
                               ``assets/shapes-sana``); ``LINGEN_VAR_MODEL`` the Image tab's VAR (next-scale
                               prediction) pipeline (default ``assets/shapes-var``); ``LINGEN_VIDEO_MODEL`` the
                               Video tab's text-to-video pipeline (default ``assets/moving-shapes-dim``)
    LINGEN_APP_OUTPUT_DIR      folder for the files the app serves (default: a fresh temp dir)
    LINGEN_APP_MAX_SAMPLES     candidates per request (default 16 on CPU, 64 with CUDA)
    LINGEN_APP_MAX_SEARCH_N    candidates of a test-time search (default 16)
    LINGEN_CLIP_MODEL          the open_clip folder behind the CLIP verifiers of the search (default
                               ``assets/clip-shapes``)
    LINGEN_APP_CONCURRENCY     generations run at once (default 1)
    LINGEN_APP_MAX_QUEUE       requests waiting in the queue before new ones are refused (default 32)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from genmodels.io import ASSETS_DIR
from genmodels.music.roll import MAX_MIDI_BYTES


@dataclass(frozen=True)
class ModelSpec:
    """A shipped model: its folder under the assets dir, the command that builds it, a name for people, and the
    file that marks a folder as holding one."""

    folder: str
    build_command: str
    title: str
    index_file: str = "model_index.json"


MODELS: dict[str, ModelSpec] = {
    "pianoroll": ModelSpec("pianoroll-hdit", "make assets-pianoroll", "piano-roll"),
    "image": ModelSpec("shapes-sana", "make assets-shapes", "text-to-image"),
    "var": ModelSpec("shapes-var", "make assets-var", "VAR text-to-image"),
    "video": ModelSpec("moving-shapes-dim", "make assets-video", "text-to-video"),
    "clip": ModelSpec("clip-shapes", "make assets-shapes", "CLIP verifier", index_file="open_clip_config.json"),
}


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken CUDA install means CPU
        return False


def _default_output_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="lingen-app-"))


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment.

    Limits are enforced server side (sliders only help the browser): a request outside them gets a
    ``gr.Error``. ``roll_scale`` is the pixels per roll cell of the picture the user paints on; ``image_scale``
    the nearest-neighbour magnification of generated images on screen (the download keeps the model's size);
    ``video_scale`` that of generated clips (the MP4 shown and offered; the GIF keeps the model's size).
    ``max_search_n`` bounds the candidates of a test-time search; ``search_batch`` is how many of them one pipeline
    call makes (1 on a CPU, so progress moves candidate by candidate; a batch does not change the candidates).
    """

    assets_dir: Path = ASSETS_DIR
    model_dirs: Mapping[str, Path] = field(default_factory=dict)  # per-model overrides of assets_dir/<folder>
    output_dir: Path = field(default_factory=_default_output_dir)
    output_ttl_s: float = 3600.0  # served files older than this are deleted
    device: str = field(default_factory=lambda: "cuda" if _cuda_available() else "cpu")
    max_upload_bytes: int = MAX_MIDI_BYTES  # MIDI uploads (2 MB)
    max_request_bytes: int = 16 * 1024 * 1024  # any upload, checked by Gradio before the handler runs
    max_image_pixels: int = 4 * 1024 * 1024  # each editor image (background or layer)
    max_bars: int = 64  # longer pieces are cut to their first max_bars bars
    max_samples: int = field(default_factory=lambda: 64 if _cuda_available() else 16)
    min_steps: int = 8
    max_steps: int = 100
    concurrency: int = 1  # generations at once; one saturates a 2-core CPU
    max_queue: int = 32
    roll_scale: int = 4
    image_scale: int = 4
    video_scale: int = 8
    max_frames: int = 32  # frames per clip, generated or given (the pipeline itself takes up to 64)
    max_search_n: int = 16
    search_batch: int = field(default_factory=lambda: 16 if _cuda_available() else 1)
    max_prompt_chars: int = 500  # text-to-image prompts (the text encoder cuts long ones to its context anyway)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"setting {f.name} must be >= 1, got {value}")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} > max_steps {self.max_steps}")
        if self.max_search_n < 2:
            raise ValueError(f"max_search_n must be >= 2 (a search compares candidates), got {self.max_search_n}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``env`` (default ``os.environ``); keyword ``overrides`` win over both."""
        env = os.environ if env is None else env
        kw: dict = {}
        if env.get("LINGEN_ASSETS_DIR"):
            kw["assets_dir"] = Path(env["LINGEN_ASSETS_DIR"])
        model_dirs = {name: Path(env[f"LINGEN_{name.upper()}_MODEL"])
                      for name in MODELS if env.get(f"LINGEN_{name.upper()}_MODEL")}
        if model_dirs:
            kw["model_dirs"] = model_dirs
        if env.get("LINGEN_APP_OUTPUT_DIR"):
            kw["output_dir"] = Path(env["LINGEN_APP_OUTPUT_DIR"])
        for key, name in (("LINGEN_APP_MAX_SAMPLES", "max_samples"), ("LINGEN_APP_CONCURRENCY", "concurrency"),
                          ("LINGEN_APP_MAX_QUEUE", "max_queue"), ("LINGEN_APP_MAX_SEARCH_N", "max_search_n")):
            if env.get(key):
                try:
                    kw[name] = int(env[key])
                except ValueError as err:
                    raise ValueError(f"{key} must be an integer, got {env[key]!r}") from err
        settings = cls(**{**kw, **overrides})
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        return settings

    def model_dir(self, name: str) -> Path:
        """The pipeline folder of model ``name`` (an override, else ``assets_dir / MODELS[name].folder``)."""
        if name in self.model_dirs:
            return Path(self.model_dirs[name])
        if name not in MODELS:
            raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
        return Path(self.assets_dir) / MODELS[name].folder
