"""An audit's output folder: result.json and report.html, written as one set.

Both are written to temporary files first. Then the previous report is moved aside, the new
result.json renamed into place (if that fails, the previous report is put back: the previous
set is intact), the new report renamed into place, and the previous one deleted. Whatever
happens, the folder never holds a report of another result, and never half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from dpaudit.audit.result import AuditResult
from dpaudit.errors import DpauditError
from dpaudit.files import check_writable_folder, create_beside
from dpaudit.reports.html import render_report

RESULT_FILE = "result.json"
REPORT_FILE = "report.html"


def write_audit(result: AuditResult, folder: str | Path, *, report: bool = True) -> list[Path]:
    """Write `result.json` (and, with `report`, `report.html`) into `folder`; the paths written."""
    folder = check_writable_folder(folder)
    result_path, report_path = folder / RESULT_FILE, folder / REPORT_FILE
    texts = {result_path: result.to_json() + "\n"}
    if report:
        texts[report_path] = render_report(result)  # rendered before anything is replaced
    temporary: list[Path] = []
    try:
        staged = {path: _write_temporary(path, text, temporary) for path, text in texts.items()}
        previous = None
        if report_path.exists():
            previous = _write_temporary(report_path, "", temporary)
            os.replace(report_path, previous)
        try:
            os.replace(staged[result_path], result_path)
        except OSError:
            if previous is not None:
                os.replace(previous, report_path)
            raise
        if report:
            os.replace(staged[report_path], report_path)
    except OSError as e:
        raise DpauditError(f"{folder}: the audit's outputs could not be written ({e.strerror or e}); no file is "
                           "half-written and no report is left beside another result.") from None
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    return list(texts)


def _write_temporary(path: Path, text: str, created: list[Path]) -> Path:
    """`text` in a new temporary file beside `path` (recorded in `created`, to be removed)."""
    fd, tmp = create_beside(path)
    created.append(tmp)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return tmp
