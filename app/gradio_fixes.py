"""Three hardening fixes around Gradio 6.31, installed once per process by :func:`install` (from ``build_app``).

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

3. Endpoints that gain inputs keep their old callers. gradio_client fills every parameter a caller leaves out
   with the component's initial value, but a plain HTTP call (``POST /gradio_api/call/<name>`` with a ``data``
   list) that sends fewer values than the endpoint has inputs is refused ("didn't receive enough input
   values"). The tabs' test-time search options were appended to their endpoints (strategy "none" by default),
   so such calls made before them would break; the fix fills missing trailing inputs of named endpoints with
   the components' initial values, as gradio_client does.
"""

from __future__ import annotations

import functools
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


def _with_trailing_defaults(validate_inputs):
    """``Blocks.validate_inputs`` that first completes the ``inputs`` of a named endpoint that holds fewer values
    than its API inputs (the inputs less ``gr.State``, which Gradio adds itself only to a complete list): the
    missing trailing API inputs get their components' initial values, then every ``gr.State`` its placeholder,
    as for a complete call (fix 3). In place: the caller reads the same list."""

    @functools.wraps(validate_inputs)
    def validate(self, block_fn, inputs):
        api_inputs = [block for block in block_fn.inputs if not block.skip_api]
        if block_fn.api_name and isinstance(inputs, list) and len(inputs) < len(api_inputs):
            given = iter([*inputs, *(getattr(block, "value", None) for block in api_inputs[len(inputs):])])
            inputs[:] = [None if block.skip_api else next(given) for block in block_fn.inputs]
        return validate_inputs(self, block_fn, inputs)

    return validate


def install(max_image_pixels: int | None = None) -> None:
    """Install fixes 1 and 3 (once) and, with ``max_image_pixels``, fix 2 (images over it refused by
    ``Image.open``)."""
    global _installed
    import gradio.processing_utils as processing_utils
    from gradio.blocks import Blocks
    from PIL import Image

    with _lock:
        if not _installed:
            processing_utils.save_pil_to_cache = _save_pil_to_cache_atomically
            Blocks.validate_inputs = _with_trailing_defaults(Blocks.validate_inputs)
            _installed = True
        if max_image_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max(1, int(max_image_pixels) // 2)
