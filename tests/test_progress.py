"""Progress bars: redrawn on a terminal, whole lines with rate and ETA in a pipe."""

from __future__ import annotations

import io

import pytest

from colpg import progress


class _Piped(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_piped_progress_prints_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Piped()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "PIPED_INTERVAL_S", 0.0)
    assert sum(progress.bar(range(5), desc="encoding documents", unit="batch")) == 10
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[0].startswith("encoding documents:   0%") and lines[-1].startswith("encoding documents: 100%")
    assert "5/5" in lines[-1] and "batch/s" in lines[-1]
    assert len(lines) == len(set(lines))  # the closing redraw is not repeated


def test_hidden_progress_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Piped()
    monkeypatch.setattr("sys.stderr", err)
    assert list(progress.bar(range(3), show=False, desc="x")) == [0, 1, 2]
    assert err.getvalue() == ""
