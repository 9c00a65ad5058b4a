"""``python -m app [--host 127.0.0.1] [--port 7860]``: serve the lingen web app (local only by default)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil

from app.main import build_app, launch_kwargs
from app.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; there is deliberately no ``--share`` (no public tunnel)."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 serves the whole network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
        demo.close()
        if not os.environ.get("LINGEN_APP_OUTPUT_DIR"):  # the fresh temp dir is the app's own
            shutil.rmtree(settings.output_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
