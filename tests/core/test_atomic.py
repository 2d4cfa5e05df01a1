"""cqia_nb.core.atomic: write, then rename; one wording for an output that cannot be written."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cqia_nb.core.atomic import (
    OutputError,
    atomic_file,
    check_writable,
    os_errno,
    output_error,
    staged_files,
    staged_folder,
    write_text,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp"))


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "a.txt"
    write_text(p, "old\n")
    with pytest.raises(OutputError, match=r"cannot write .*a\.txt: no space left on device; free some space"):
        with atomic_file(p, "w", encoding="utf-8") as fh:
            fh.write("half of the new")
            enospc()
    assert p.read_text() == "old\n" and leftovers(tmp_path) == []
    with pytest.raises(KeyError):  # other errors pass through unchanged, the temp file still goes
        with atomic_file(p, "w", encoding="utf-8") as fh:
            fh.write("x")
            raise KeyError("boom")
    assert p.read_text() == "old\n" and leftovers(tmp_path) == []
    write_text(p, "new\n")
    assert p.read_text() == "new\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600


def test_staged_folder_publishes_complete_folders_only(tmp_path):
    out = tmp_path / "build"
    with staged_folder(out) as tmp:
        (tmp / "a").mkdir()
        (tmp / "a" / "x.json").write_text("1")
    assert (out / "a" / "x.json").read_text() == "1"
    with pytest.raises(OutputError, match="no space left"):
        with staged_folder(out) as tmp:
            (tmp / "y.json").write_text("2")
            enospc()
    assert sorted(p.name for p in out.rglob("*")) == ["a", "x.json"] and leftovers(tmp_path) == []
    with staged_folder(out) as tmp:  # a previous folder is replaced whole
        (tmp / "z.json").write_text("3")
    assert sorted(p.name for p in out.rglob("*")) == ["z.json"] and leftovers(tmp_path) == []


def test_staged_files_keep_other_files_and_leave_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    (out / "kept.csv").write_text("old")
    with pytest.raises(OutputError):
        with staged_files(out) as tmp:
            (tmp / "kept.csv").write_text("new")
            enospc()
    assert (out / "kept.csv").read_text() == "old" and sorted(os.listdir(out)) == ["kept.csv", "mine.txt"]
    with staged_files(out) as tmp:
        (tmp / "kept.csv").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (out / "kept.csv").read_text() == "new" and (out / "sub" / "b.txt").is_file()
    assert sorted(os.listdir(out)) == ["kept.csv", "mine.txt", "sub"]
    fresh = tmp_path / "fresh"
    with pytest.raises(OutputError):
        with staged_files(fresh):
            enospc()
    assert not fresh.exists()  # a folder made for the outputs goes again


@pytest.mark.parametrize("code, reason, advice", [
    (errno.EACCES, "permission denied", "choose a folder you can write to"),
    (errno.EROFS, "read-only file system", "writable file system"),
    (errno.ENOSPC, "no space left on device", "free some space"),
    (errno.EFBIG, "file too large", "raise the limit"),
])
def test_output_error_wording(tmp_path, code, reason, advice):
    e = output_error(tmp_path / "out", OSError(code, os.strerror(code)))
    assert str(e) == f"cannot write {tmp_path / 'out'}: {e.reason}; {e.advice}"
    assert e.reason.startswith(reason) and advice in e.advice and e.errno == code


def test_a_path_under_a_file_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*notes\.txt/out: .*notes\.txt is a file, not a folder; "
                                          r"choose an output path"):
        check_writable(tmp_path / "notes.txt" / "out")
    with pytest.raises(OutputError, match=r"notes\.txt: it is a file, not a folder"):
        check_writable(tmp_path / "notes.txt")


def test_check_writable_leaves_no_probe(tmp_path):
    assert check_writable(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert os.listdir(tmp_path / "new" / "dir") == []


class RustWriterError(Exception):
    """What polars raises for a full disk under write_parquet: its own type, the OS error in the text."""


def test_os_errno_finds_the_os_error_behind_other_exception_types():
    assert os_errno(OSError(errno.ENOSPC, "x")) == errno.ENOSPC
    assert os_errno(RustWriterError("parquet: underlying IO error: No space left on device (os error 28)")) == 28
    assert os_errno(RuntimeError("[Errno 30] Read-only file system: 'a'")) == errno.EROFS
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert os_errno(outer) == errno.EDQUOT
    assert os_errno(ValueError("a value error (not an OS one)")) is None


def test_a_wrapped_os_error_becomes_an_output_error_and_other_errors_pass(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"cannot write .*out: no space left on device; free some space"):
        with staged_files(out) as tmp:
            (tmp / "kept.parquet").write_bytes(b"half")
            raise RustWriterError("parquet: File out of specification: underlying IO error: "
                                  "No space left on device (os error 28)")
    assert not out.exists()
    with pytest.raises(ValueError):  # no OS error behind it: not an output problem, passes unchanged
        with staged_folder(out):
            raise ValueError("bad spec")
    assert not out.exists() and leftovers(tmp_path) == []
    e = output_error(out, RustWriterError("line one (os error 5)\nline two"))
    assert "\n" not in str(e) and e.errno == 5  # an errno without its own wording: os.strerror, one line
