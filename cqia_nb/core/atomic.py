"""Writing outputs so that a failure leaves nothing half-written: write to a temporary file or folder
beside the target (the same file system), then rename it into place. One wording for an output that
cannot be written.

- :func:`atomic_file`: one file (temp file + ``os.replace``);
- :func:`staged_folder`: a whole folder, published at once (a previous folder there is replaced only
  when the new one is complete) — a build's exports, a model folder;
- :func:`staged_files`: several files into a folder that may hold other things (each renamed into
  place only after all were written) — a filter run's outputs.

Every ``OSError`` met while writing becomes an :class:`OutputError` naming the output, the reason
and what to do ("cannot write out/: permission denied; choose a folder you can write to ..."); the
temporary file or folder is removed first. So does an error of another type that carries an operating
system error: writers in Rust (polars' ``write_parquet``, safetensors) raise their own exception types
with the OS error in the message ("No space left on device (os error 28)"), see :func:`os_errno`.
Temporary names start with "." and end with ".tmp".
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


class OutputError(OSError):
    """An output could not be written. ``str()`` is one line: ``cannot write PATH: REASON; WHAT TO DO``."""

    def __init__(self, path: str | Path, reason: str, advice: str, code: int | None = None):
        super().__init__(code, reason)
        self.path, self.reason, self.advice = Path(path), reason, advice

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}; {self.advice}"


def _file_in_path(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder (so nothing can go under it)."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


# Rust's std::io::Error prints "No space left on device (os error 28)"; Python's OSError "[Errno 28] ..."
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def os_errno(err: BaseException) -> int | None:
    """The operating-system error number behind ``err``: its ``errno``, else one named in its message
    or in the exceptions it was raised from (``__cause__`` / ``__context__``); None when there is none.
    Libraries written in Rust or C++ wrap an OS error in their own exception types (polars'
    ``ComputeError`` for a full disk under ``write_parquet``), which would otherwise pass as a crash."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(e, "errno", None)
        if isinstance(code, int):
            return code
        m = _OS_ERROR_IN_TEXT.search(str(e))
        if m:
            return int(m.group(1) or m.group(2))
        e = e.__cause__ or e.__context__
    return None


def _is_os_error(err: BaseException) -> bool:
    return isinstance(err, OSError) or (isinstance(err, Exception) and os_errno(err) is not None)


def output_error(path: str | Path, err: BaseException) -> OutputError:
    """The :class:`OutputError` for ``err``, met while writing ``path``."""
    if isinstance(err, OutputError):
        return err
    p = Path(path)
    code = os_errno(err)
    blocker = _file_in_path(p) if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR) else None
    if blocker is not None:
        what = "it is a file, not a folder" if blocker == p else f"{blocker} is a file, not a folder"
        return OutputError(p, what, "choose an output path whose folders are folders", code)
    reasons = {
        errno.EACCES: ("permission denied", "choose a folder you can write to, or change its permissions"),
        errno.EPERM: ("operation not permitted", "choose a folder you can write to, or change its permissions"),
        errno.EROFS: ("read-only file system", "choose a folder on a writable file system"),
        errno.ENOSPC: ("no space left on device", "free some space or write to another disk; "
                                                  "nothing was left half-written"),
        errno.EFBIG: ("file too large for this file system or the file-size limit (ulimit -f)",
                      "raise the limit or write to another disk; nothing was left half-written"),
        errno.ENAMETOOLONG: ("file name too long", "choose a shorter output path"),
    }
    if hasattr(errno, "EDQUOT"):
        reasons[errno.EDQUOT] = ("disk quota exceeded", "free some space or write to another disk; "
                                                        "nothing was left half-written")
    if code in reasons:
        reason, advice = reasons[code]
    else:  # keep the message to one line: a wrapped error's text can span several
        text = getattr(err, "strerror", None) or (os.strerror(code) if code else None) or str(err) or type(err).__name__
        reason, advice = " ".join(str(text).split()), "check the output path"
    return OutputError(p, reason, advice, code)


def make_folder(path: str | Path) -> Path:
    """``mkdir -p``, an :class:`OutputError` when it cannot be made."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(p, e) from e
    return p


def check_writable(path: str | Path) -> Path:
    """Make the folder ``path`` and prove that a file can be created in it (before hours of work)."""
    p = make_folder(path)
    probe = p / f".cqia-write-test.{secrets.token_hex(4)}.tmp"
    try:
        with open(probe, "xb") as fh:
            fh.write(b"\n")
    except OSError as e:
        raise output_error(p, e) from e
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return p


def _temp_name(target: Path, kind: str = "") -> Path:
    return target.with_name(f".{target.name}.{kind}{secrets.token_hex(4)}.tmp")


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except OSError:
        pass


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, encoding: str | None = None,
                newline: str | None = None, fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` (so a reader
    sees the old file or the new one, never a part), on any error it is removed and ``path`` is left
    as it was. Permissions follow the umask, as for ``open(path, "w")``."""
    p = Path(path)
    make_folder(p.parent)
    tmp = _temp_name(p)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        _remove(tmp)
        if _is_os_error(e):
            raise output_error(p, e) from e
        raise
    if fsync:
        fsync_dir(p.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text with ``\\n`` line ends, written atomically."""
    with atomic_file(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return Path(path)


@contextmanager
def staged_folder(path: str | Path) -> Iterator[Path]:
    """A new empty folder beside ``path`` to write into; when the block ends without error it becomes
    ``path`` (a folder already there is swapped out and deleted only then). On an error the temporary
    folder is removed and ``path`` is left as it was."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise output_error(p, OSError(errno.EEXIST, "exists"))
    make_folder(p.parent)
    tmp = _temp_name(p)
    try:
        os.mkdir(tmp)
        yield tmp
        _publish(tmp, p)
    except BaseException as e:
        _remove(tmp)
        if _is_os_error(e):
            raise output_error(p, e) from e
        raise


def _publish(tmp: Path, p: Path) -> None:
    try:
        os.rename(tmp, p)  # p absent, or an empty folder
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    old = _temp_name(p, "old.")
    os.rename(p, old)
    try:
        os.rename(tmp, p)
    except BaseException:
        os.rename(old, p)
        raise
    _remove(old)


@contextmanager
def staged_files(folder: str | Path) -> Iterator[Path]:
    """A temporary folder inside ``folder`` to write files into; when the block ends without error,
    each file is renamed to the same relative path in ``folder`` (replacing a file of that name) and
    the temporary folder is removed. On an error nothing in ``folder`` is touched (a ``folder``
    created here is removed again)."""
    out = Path(folder)
    created = not out.exists()
    make_folder(out)
    tmp = out / f".cqia-staging.{secrets.token_hex(4)}.tmp"
    try:
        os.mkdir(tmp)
        yield tmp
        for f in sorted(x for x in tmp.rglob("*") if x.is_file()):
            dest = out / f.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
        _remove(tmp)
    except BaseException as e:
        _remove(tmp)
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        if _is_os_error(e):
            raise output_error(out, e) from e
        raise
