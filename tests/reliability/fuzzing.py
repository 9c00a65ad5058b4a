"""Shared by the reliability tests: a tally of fuzz cases per target, written to ``test-artifacts/fuzz_counts.json``.

``attempt(target, fn, ...)`` runs one case: a result or a ``ValueError`` (with a message) counts as handled;
any other exception counts as a crash and is re-raised, so the property test fails and hypothesis shrinks it.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COUNTS_FILE = ROOT / "test-artifacts" / "fuzz_counts.json"

_lock = threading.Lock()
COUNTS: dict[str, dict[str, int]] = defaultdict(lambda: {"tried": 0, "ok": 0, "rejected": 0, "crashed": 0})


def record(target: str, outcome: str) -> None:
    with _lock:
        COUNTS[target]["tried"] += 1
        COUNTS[target][outcome] += 1


def attempt(target: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``: its result, or None when it raised a ``ValueError`` with a message."""
    try:
        result = fn(*args, **kwargs)
    except ValueError as err:
        if not str(err).strip():
            record(target, "crashed")
            raise AssertionError(f"{target}: {type(err).__name__} without a message") from err
        record(target, "rejected")
        return None
    except BaseException:
        record(target, "crashed")
        raise
    record(target, "ok")
    return result


def write_counts(path: Path = COUNTS_FILE) -> dict:
    """Write this session's tallies to ``path`` (atomically) and return what was written."""
    with _lock:
        targets = {k: dict(v) for k, v in sorted(COUNTS.items())}
    total = {key: sum(t[key] for t in targets.values()) for key in ("tried", "ok", "rejected", "crashed")}
    data = {"cases": total["tried"], "crashes": total["crashed"], "handled_ok": total["ok"],
            "clear_errors": total["rejected"], "targets": targets}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return data
