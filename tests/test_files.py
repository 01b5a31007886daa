"""Atomic writes and the writable-folder check."""

import os

import pytest

from dpaudit.errors import DpauditError, one_line
from dpaudit.files import check_writable_folder, staged, write_atomic


def test_a_failed_rename_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_atomic(path, b"old")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(DpauditError, match=r"result.json: could not be written \(No space left on device\); any previous"):
        with staged(path) as tmp:
            tmp.write_text("new")
    with pytest.raises(OSError):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_an_error_while_writing_removes_the_temporary_file(tmp_path):
    path = tmp_path / "report.html"
    with pytest.raises(KeyboardInterrupt):
        with staged(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert not any(tmp_path.iterdir())


def test_writable_folder_is_created_and_a_file_in_the_way_is_refused(tmp_path):
    assert check_writable_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DpauditError, match="file: not a folder"):
        check_writable_folder(tmp_path / "file")
    with pytest.raises(DpauditError, match="not writable"):
        check_writable_folder(tmp_path / "file" / "sub")


@pytest.mark.parametrize("name, shown", [("a\nError: forged", "a\\nError: forged"), ("tab\tname", "tab\\tname"),
                                         ("esc\x1b[31m", "esc\\x1b[31m"), ("plain name.png", "plain name.png")])
def test_one_line_escapes_what_could_forge_a_line(name, shown):
    assert one_line(f"{name}: bad") == f"{shown}: bad" and "\n" not in one_line(name)


def test_outputs_get_the_usual_mode_not_a_private_temporary_ones(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    write_atomic(tmp_path / "a", b"x")
    with staged(tmp_path / "b") as tmp:
        tmp.write_text("x")
    assert os.stat(tmp_path / "a").st_mode == os.stat(tmp_path / "b").st_mode == os.stat(plain).st_mode
