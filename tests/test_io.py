"""Atomic file and folder writes."""

from __future__ import annotations

import os
import stat

import pytest

from genmodels.io import replace_dir_atomic, write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]


def test_replace_dir_atomic_swaps_in_a_complete_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replace_dir_atomic(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # readers still see the old folder while writing
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model"]
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o055 == 0o055 & ~_umask()  # not mkdtemp's private 0700


def test_replace_dir_atomic_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replace_dir_atomic(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert os.listdir(target) == ["old.txt"] and sorted(os.listdir(tmp_path)) == ["model"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
