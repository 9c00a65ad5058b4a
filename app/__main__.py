"""``python -m app [--host 127.0.0.1] [--port 7860]``: serve the lingen web app (local only by default)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import threading

from app.main import build_app, launch_kwargs
from app.process import limit_malloc_arenas, trim_heap
from app.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; there is deliberately no ``--share`` (no public tunnel)."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 serves the whole network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    return parser.parse_args(argv)


def _trim_every(seconds: float, stop: threading.Event) -> None:
    """Hand freed heap pages back to the system every ``seconds`` until ``stop`` (see app/process.py)."""
    while not stop.wait(seconds):
        trim_heap()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_malloc_arenas()  # before the server's threads exist: resident memory stays flat under load
    stop_trimming = threading.Event()
    threading.Thread(target=_trim_every, args=(30.0, stop_trimming), daemon=True, name="heap-trim").start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    settings = Settings.from_env()
    demo = build_app(settings)
    _, local_url, _ = demo.launch(server_name=args.host, server_port=args.port, share=False, quiet=True,
                                  prevent_thread_lock=True, **launch_kwargs(settings))
    print(f"lingen app running on {local_url} (Ctrl+C to stop)", flush=True)
    try:
        demo.block_thread()
    finally:
        stop_trimming.set()
        demo.close()
        if not os.environ.get("LINGEN_APP_OUTPUT_DIR"):  # the fresh temp dir is the app's own
            shutil.rmtree(settings.output_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
