"""Load: 16 concurrent sessions, 64 generate requests in all, against the in-process app with a tiny model.

Every request succeeds (the queue holds the waiting ones) and the server's resident memory after the run is
within 20% of what it was after the first 8 requests (no per-request leak). ``benchmarks/app_load.py`` runs
the same load against the shipped model and reports latencies.
"""

from __future__ import annotations

import pytest

from benchmarks.app_load import run_load

pytestmark = pytest.mark.slow  # 70 s: `make test-slow`


def test_sixteen_sessions_sixty_four_requests_all_succeed_without_memory_growth(server, downloads):
    # A small mask: the untrained model fills every masked cell with notes, and synthesising hundreds of notes
    # of audio would dominate the request.
    result = run_load(server, clients=16, requests=64, warmup=8, steps=2, repaint=1, samples=1, bars="3-3",
                      pitches="60-63", download_dir=str(downloads))
    summary = result.summary()
    print(summary)
    assert result.errors == []
    assert len(result.latencies) == 64
    assert result.rss_after <= 1.2 * result.rss_warm, summary
