"""Fixtures for the web-app tests: a tiny untrained pipeline, settings pointing at it, and one app server
launched in-process for the whole session (tests get their own ``gradio_client`` session each)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client  # noqa: E402

from app.examples import list_examples  # noqa: E402
from app.main import build_app, launch_kwargs  # noqa: E402
from app.settings import Settings  # noqa: E402

# Small enough that a request costs well under a second on a busy 2-core CPU.
FAST = {"repaint": 1, "samples": 1, "busyness": 100, "steps": 2, "seed": 0}


def pytest_collection_modifyitems(items) -> None:
    # Gradio 6.31's queue calls pandas APIs that pandas 3 deprecates, twice per request: not ours to fix.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report as ``item.rep_<phase>`` (the browser test screenshots failures)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """An untrained tiny HDiT pipeline with the shipped model's window (64 × 128), saved like the real one."""
    from genmodels.diffusion.sampling import make_edm_scheduler
    from genmodels.hdit import HDiT
    from genmodels.pipelines import PianoRollInpaintPipeline

    folder = tmp_path_factory.mktemp("pianoroll-tiny")
    torch.manual_seed(0)
    model = HDiT(**{**HDiT.tiny_config(), "sample_size": [64, 128]}).eval()
    PianoRollInpaintPipeline(transformer=model, scheduler=make_edm_scheduler("euler")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def app_settings(tiny_pipeline_dir, tmp_path_factory) -> Settings:
    return Settings(assets_dir=tmp_path_factory.mktemp("no-assets"), model_dirs={"pianoroll": tiny_pipeline_dir},
                    output_dir=tmp_path_factory.mktemp("app-out"), device="cpu", max_samples=4, min_steps=2,
                    concurrency=1, max_queue=32)


@pytest.fixture(scope="session")
def server(app_settings) -> Iterator[str]:
    """URL of the app, served from this process on a free local port."""
    demo = build_app(app_settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_kwargs(app_settings))
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-downloads")


def make_client(url: str, downloads: Path) -> Client:
    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


@pytest.fixture
def client(server, downloads) -> Client:
    """A fresh browser-like session (its own gr.State)."""
    return make_client(server, downloads)


@pytest.fixture(scope="session")
def examples() -> dict[str, Path]:
    found = list_examples()
    assert len(found) >= 3, "the bundled examples are missing: run `python -m app.examples`"
    return found
