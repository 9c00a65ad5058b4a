"""Files the app serves (MIDI downloads, audio previews): one fresh folder per result, old ones pruned."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path


class OutputStore:
    """Folders under ``root`` for served files; folders older than ``ttl_s`` are deleted as new ones are made."""

    def __init__(self, root: str | Path, ttl_s: float = 3600.0):
        self.root = Path(root)
        self.ttl_s = float(ttl_s)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def new_dir(self) -> Path:
        """A new empty folder for one result's files."""
        self.prune()
        path = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def prune(self, now: float | None = None) -> int:
        """Delete result folders last modified more than ``ttl_s`` ago; returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            for child in self.root.iterdir():
                try:
                    if child.is_dir() and now - child.stat().st_mtime > self.ttl_s:
                        shutil.rmtree(child, ignore_errors=True)
                        removed += 1
                except FileNotFoundError:  # removed by someone else meanwhile
                    continue
        return removed
