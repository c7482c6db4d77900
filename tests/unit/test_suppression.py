from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.stages.suppression import Suppression


def write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_file_format(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.txt"
    write(path, "# erased on request\nu1\n\n   u2  \n  # indented comment\nu#3\n42\n", 10**18)
    suppression = Suppression(path)
    assert suppression.users == {"u1", "u2", "u#3", "42"}
    assert suppression.suppressed({"userId": "u1"}) is True
    assert suppression.suppressed({"userId": "u2"}) is True
    assert suppression.suppressed({"userId": "u#3"}) is True
    assert suppression.suppressed({"userId": 42}) is True  # numeric ids match their text
    assert suppression.suppressed({"userId": "u4"}) is False
    assert suppression.suppressed({"userId": "# erased on request"}) is False
    # userId only (Segment suppresses by userId): an anonymous event is not matched
    assert suppression.suppressed({"anonymousId": "u1"}) is False


def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.txt"
    write(path, "u1\n", 10**18)
    suppression = Suppression(path)
    assert suppression.reload_if_changed() is False  # unchanged
    write(path, "u2\n", 10**18 + 10**9)
    assert suppression.reload_if_changed() is True
    assert suppression.suppressed({"userId": "u1"}) is False
    assert suppression.suppressed({"userId": "u2"}) is True
    assert suppression.reload_if_changed() is False


def test_reload_notices_a_size_change_with_the_same_mtime(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.txt"
    write(path, "u1\n", 10**18)
    suppression = Suppression(path)
    write(path, "u1\nu22\n", 10**18)
    assert suppression.reload_if_changed() is True
    assert suppression.suppressed({"userId": "u22"}) is True


def test_a_vanished_file_keeps_the_previous_list(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.txt"
    write(path, "u1\n", 10**18)
    suppression = Suppression(path)
    path.unlink()
    assert suppression.reload_if_changed() is False
    assert suppression.suppressed({"userId": "u1"}) is True  # fail closed
    assert suppression.problem is not None and "keeping 1" in suppression.problem
    write(path, "u9\n", 10**18 + 1)
    assert suppression.reload_if_changed() is True
    assert suppression.problem is None
    assert suppression.suppressed({"userId": "u1"}) is False


def test_missing_file_is_an_error_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suppressed-users file"):
        Suppression(tmp_path / "nope.txt")


def test_no_path_suppresses_nothing() -> None:
    suppression = Suppression(None)
    assert suppression.suppressed({"userId": "u1"}) is False
    assert suppression.reload_if_changed() is False
