"""An audit's output folder is written as one set: never a new result beside an old report."""

import json
import os

import pytest

from dpaudit.errors import DpauditError
from dpaudit.reports import folder
from dpaudit.reports.folder import write_audit
from tests.reports.fakes import fake_result


def test_result_and_report_are_written_together(tmp_path):
    paths = write_audit(fake_result(), tmp_path / "out")
    assert [p.name for p in paths] == ["result.json", "report.html"]
    assert json.loads(paths[0].read_text())["schema"] == "dpaudit.result/1" and "<html" in paths[1].read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "result.json"]


def test_without_a_report_the_previous_report_goes(tmp_path):
    write_audit(fake_result(tstr=0.5), tmp_path)
    write_audit(fake_result(tstr=0.9), tmp_path, report=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    assert json.loads((tmp_path / "result.json").read_text())["checks"]["utility"]["metrics"]["tstr_accuracy"]["value"] == 0.9


def test_a_failing_report_or_disk_leaves_the_previous_set(tmp_path, monkeypatch):
    write_audit(fake_result(tstr=0.5), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(result):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(folder, "render_report", broken)
    with pytest.raises(RuntimeError):
        write_audit(fake_result(tstr=0.9), tmp_path)
    monkeypatch.undo()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(DpauditError, match="No space left"):
        write_audit(fake_result(tstr=0.9), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
