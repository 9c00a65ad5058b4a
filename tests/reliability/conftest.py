"""Reliability tests: the fuzz tally is written to ``test-artifacts/fuzz_counts.json`` when the session ends."""

from __future__ import annotations

import pytest

from tests.reliability.fuzzing import COUNTS, write_counts


@pytest.fixture(scope="session", autouse=True)
def _fuzz_counts():
    yield
    if COUNTS:
        data = write_counts()
        print(f"\nfuzz: {data['cases']} cases, {data['crashes']} crashes ({data['clear_errors']} clear errors)")
