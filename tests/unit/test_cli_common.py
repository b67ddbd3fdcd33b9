"""How a failing command leaves its reason for Kubernetes (and so for the Argo UI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from filedrop.cli import common


def test_an_error_becomes_the_termination_message_only_where_the_kubelet_made_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setattr(common, "TERMINATION_LOG", log)
    common.error("outside a container")
    assert not log.exists(), "the file is never created"
    assert "outside a container" in capsys.readouterr().err

    log.write_text("")  # what the kubelet mounts
    common.error("cannot reach the warehouse")
    common.error("dbt build: FAILED")
    assert log.read_text() == "dbt build: FAILED"  # the last one wins
    common.termination_message("é" * 3000)
    assert len(log.read_bytes()) == common.TERMINATION_LIMIT
    common.termination_message("x" + "é" * 3000)  # the limit falls inside a two-byte character
    assert log.read_text() == "x" + "é" * ((common.TERMINATION_LIMIT - 1) // 2)


def test_a_termination_log_that_cannot_be_written_does_not_hide_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    log.write_text("")
    log.chmod(0o444)
    monkeypatch.setattr(common, "TERMINATION_LOG", log)
    monkeypatch.setattr(Path, "write_bytes", lambda *_: (_ for _ in ()).throw(PermissionError("read-only")))
    common.error("still said")
    assert "still said" in capsys.readouterr().err
