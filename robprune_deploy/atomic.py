"""Atomic file writes: write to a temporary file in the target folder, fsync, then rename.

A process killed mid-write leaves the previous file (or none) in place, never a truncated one.
Files get the permissions of an ordinary ``open()`` (``0666`` less the umask, usually ``0644``),
not ``mkstemp``'s private ``0600``. A write that fails because the disk is full, the file too large
or the folder read-only is an :class:`~robprune_deploy.errors.OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robprune_deploy.errors import OutputError

STORAGE_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
    )
    if code is not None
)
"""``errno`` values that mean "this output cannot be written here", not "the program is wrong"."""


def storage_problem(exc: BaseException) -> str | None:
    """What went wrong when ``exc`` (or an exception it was raised from) is a failed write to storage."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return os.strerror(current.errno) if current.errno is not None else str(current)
        current = current.__cause__ or current.__context__
    return None


def _file_mode() -> int:
    """``0666`` less this process's umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then restore it at once
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    :raises OutputError: when the folder cannot be created or the write fails for lack of space,
        size limit or permission.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, _file_mode())
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{target}: cannot be written ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        problem = storage_problem(exc)
        if problem is None:
            raise
        raise OutputError(f"{target}: cannot be written ({problem})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
