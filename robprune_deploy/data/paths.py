"""What a data path is, and whether a dataset folder's tree may be read.

A path that exists but is a FIFO, a socket or a device is a different mistake from a missing one,
and a dangerous one: opening a FIFO for reading blocks until something writes to it, so every data
file is checked to be a regular file before it is opened.

Image folders are walked as torchvision's ``ImageFolder`` walks them, following symbolic links
(``os.walk(followlinks=True)``). A link back to a folder above it would make that walk repeat the
same images until the path is too long, and a link out of ``data.root`` would read images nobody
meant to train or test on; :func:`check_tree` refuses both before the walk.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from robprune_deploy.errors import DatasetError


def special_kind(path: Path) -> str | None:
    """``"a FIFO"``, ``"a socket"`` or ``"a device"`` when ``path`` (links followed) is one, else ``None``."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def not_a_folder(path: Path) -> str:
    """Why ``path`` is not a folder, as the end of a sentence: ``"is a FIFO, not a folder"``, ..."""
    kind = special_kind(path)
    if kind is not None:
        return f"is {kind}, not a folder"
    if path.is_file():
        return "is a file, not a folder"
    return "does not exist"


def not_a_file(path: Path, missing: str = "does not exist") -> str | None:
    """Why ``path`` is not a regular file (``missing`` when it does not exist); ``None`` when it is one."""
    if path.is_file():
        return None
    kind = special_kind(path)
    if kind is not None:
        return f"is {kind}, not a regular file"
    if path.is_dir():
        return "is a folder, not a file"
    return missing


def require_file(path: Path, where: str, missing: str = "does not exist") -> Path:
    """``path`` when it is a regular file.

    :raises DatasetError: ``"<where>: <path> is a FIFO, not a regular file"`` and the like.
    """
    reason = not_a_file(path, missing)
    if reason is not None:
        raise DatasetError(f"{where}: {path} {reason}")
    return path


def refuse_special_files(folder: Path, names: tuple[str, ...], where: str) -> None:
    """Refuse any of ``folder/name`` that exists but is a FIFO, socket or device (a library opens them)."""
    for name in names:
        kind = special_kind(folder / name)
        if kind is not None:
            raise DatasetError(f"{where}: {folder / name} is {kind}, not a regular file")


def _link_problem(link: Path, root: Path, split: Path) -> str | None:
    """Why the symbolic link ``link`` may not be followed, or ``None`` (``root``, ``split`` resolved)."""
    try:
        target = link.resolve(strict=True)
    except RuntimeError:  # how Python 3.11 reports a loop of links
        return "is a symbolic link loop"
    except FileNotFoundError:
        return f"is a symbolic link to {os.readlink(link)}, which does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        return f"is a symbolic link that cannot be followed ({exc.strerror})"
    if not target.is_relative_to(root):
        return f"is a symbolic link to {target}, outside data.root {root}"
    if not target.is_relative_to(split):
        return f"is a symbolic link to {target}, outside {split} (a link may not carry images across splits)"
    if target.is_dir() and link.parent.resolve().is_relative_to(target):
        return f"is a symbolic link loop (it points to {target}, a folder that holds it)"
    return None


def check_tree(top: Path, root: Path) -> None:
    """Refuse what ``ImageFolder`` must not walk into under the split folder ``top`` of ``root``.

    The tree is walked without following links; each link is checked where it points instead.

    :raises DatasetError: naming the first symbolic link that loops, dangles or leaves ``root`` or
        its split, or the first entry that is a FIFO, socket or device.
    """
    root = root.resolve()
    if top.is_symlink():
        problem = _link_problem(top, root, root)
        if problem is not None:
            raise DatasetError(f"data.root: {top} {problem}")
    split = top.resolve()
    for folder, dirs, files in os.walk(top, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            entry = Path(folder) / name
            if entry.is_symlink():
                problem = _link_problem(entry, root, split)
                if problem is not None:
                    raise DatasetError(f"data.root: {entry} {problem}")
            kind = special_kind(entry)
            if kind is not None:
                raise DatasetError(f"data.root: {entry} is {kind}, not an image file")
