"""An output folder belongs to one recipe, and to one process at a time.

``state.json`` records the folder's owner: the fingerprint of the resolved recipe (see
:func:`recipe_fingerprint`), the robprune-deploy version that wrote it, and the recipe file. Every
command that writes into ``--out`` (``run``, ``--resume``, the stage commands) claims the folder
first: a folder holding another recipe's results, or results of an unknown recipe, is refused with
an :class:`~robprune_deploy.errors.OutputError` (exit 2) unless ``--force`` clears its stage files.
While a command works in the folder it holds ``.robprune.lock`` (pid, host, start time); a second
process is refused, and a lock left by a process that no longer runs on this host is taken over.

``--force`` removes only what robprune-deploy writes (:func:`project_files`), never other files,
and nothing is written, read or deleted through a symbolic link: a link in the folder where one of
its files or subfolders goes is refused (:func:`check_output_path`), so a link to a folder outside
cannot make ``--force`` delete, or a stage overwrite, what lies there. ``--report`` follows the same
rules (:func:`owned_report`), and neither folder may lie inside the recipe's ``data.root``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robprune_deploy.atomic import write_json
from robprune_deploy.errors import OutputError, control_character

if TYPE_CHECKING:
    from robprune_deploy.pipeline.context import RunContext
    from robprune_deploy.pipeline.run_state import RunState
    from robprune_deploy.recipe import Recipe

STATE_FILE = "state.json"
LOCK_FILE = ".robprune.lock"
ERROR_LOG = "robprune-error.log"
EXCLUDED_SECTIONS = ("tracking", "gate", "quantize", "runtime")
"""Recipe sections that cannot change a stage's files: where results are logged and registered
(``tracking``), the release thresholds (``gate``), which every run applies afresh, the INT8
settings (``quantize``): quantization reads the exported model and always runs afresh, so
``robprune quantize`` can try other settings on a finished folder, and the threads
(``runtime``): a run killed on a loaded machine may resume with another count."""

_TOP_LEVEL_FILES = frozenset(
    {
        "pretrained.pt",
        "pruned.pt",
        "finetuned.pt",
        "statistics.json",
        "model.onnx",
        "dense.onnx",
        "model.int8.onnx",
        "summary.json",
        "outcomes.json",
        "outcomes.int8.json",
        "report.md",
        "recipe.yaml",
        "gate.json",
        "gate.md",
        "gate.png",
        "release.json",
        "MODEL_CARD.md",
        "security_curve.png",
        "layers.png",
        "training.png",
        STATE_FILE,
        ERROR_LOG,
    }
)
_SUBFOLDERS = {
    "checkpoints": (".pt",),
    "plots": (".png", ".md", ".json", ".csv", ".npz"),
    "gate_int8": (".png", ".md", ".json"),
}
"""Folders the stages create, and the kinds of file they write there (plugins name their plots)."""
_STALE_GARBAGE_LOCK_S = 30.0


def _is_leftover(name: str) -> bool:
    """A temporary file of an interrupted atomic write (``.<file>.<random>.tmp``) or export."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.data"))


def _regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def project_files(out_dir: Path) -> list[Path]:
    """The files robprune-deploy wrote (or would write) in ``out_dir``; nothing else.

    A symbolic link is never one of them, nor anything in a subfolder that is a link: deleting
    through it would delete what lies outside the folder.
    """
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if _regular_file(p) and (p.name in _TOP_LEVEL_FILES or _is_leftover(p.name))]
    for folder, suffixes in _SUBFOLDERS.items():
        sub = out_dir / folder
        if sub.is_dir() and not sub.is_symlink():
            found += [p for p in sub.iterdir() if _regular_file(p) and (p.suffix in suffixes or _is_leftover(p.name))]
    return sorted(found)


def link_inside(folder: Path) -> Path | None:
    """The first symbolic link where robprune-deploy writes, reads or deletes in ``folder``: one of
    its file names, its lock, a temporary file, a stage subfolder or anything inside one; else None."""
    ours = _TOP_LEVEL_FILES | _SUBFOLDERS.keys() | {LOCK_FILE}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:
        if entry.name not in ours and not _is_leftover(entry.name):
            continue
        if entry.is_symlink():
            return Path(entry.path)
        if entry.name in _SUBFOLDERS and entry.is_dir(follow_symlinks=False):
            inner = next((e for e in sorted(os.scandir(entry.path), key=lambda e: e.name) if e.is_symlink()), None)
            if inner is not None:
                return Path(inner.path)
    return None


def clear_stage_files(out_dir: Path) -> list[Path]:
    """``--force``: remove :func:`project_files` (and the stage subfolders when that empties them)."""
    removed = project_files(out_dir)
    for path in removed:
        path.unlink(missing_ok=True)
    for folder in _SUBFOLDERS:
        with contextlib.suppress(OSError):  # not empty: it holds files that are not ours
            (out_dir / folder).rmdir()
    return removed


# --- the owner record ------------------------------------------------------------------------------
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("evaluate", "runtimes"): ["onnxruntime"],
    ("evaluate", "torch_examples"): None,
    ("evaluate", "ensemble_examples"): None,
    ("evaluate", "threats"): [],
    ("evaluate", "corruptions"): None,
}
"""Recipe fields added after folders were written with the recipes that lacked them, with their
defaults: at the default, such a field is not part of the fingerprint (a new field must be added
here, or every folder written before it is refused as another recipe's)."""


def fingerprint_document(recipe: Recipe) -> dict[str, Any]:
    """What the fingerprint hashes: the resolved recipe less :data:`EXCLUDED_SECTIONS`.

    The algorithm's options are taken with their defaults filled in (``{}`` and the explicit
    defaults are the same recipe), a checkpoint by the SHA-256 of its content (the same path with
    other weights is another recipe; the same weights downloaded anew are not), and the
    ``pretrain`` section is left out when a checkpoint replaces pretraining (not when
    ``pretrain.from_checkpoint`` trains it further).
    """
    from robprune_deploy.recipe import recipe_to_dict, validate_algorithm_config

    document = recipe_to_dict(recipe)
    for section in EXCLUDED_SECTIONS:
        document.pop(section, None)
    # The memory bound decides whether a session may run, never what it computes: raising it to
    # resume a refused evaluation is the same recipe.
    document["evaluate"].pop("max_session_memory_mb", None)
    # Fields that came later are left out at their default, so folders written before keep their owner.
    for (section, name), default in LATER_FIELDS.items():
        if document[section].get(name, default) == default:
            document[section].pop(name, None)
    document["compression"]["config"] = validate_algorithm_config(recipe).model_dump(mode="json")
    checkpoint = recipe.model.checkpoint
    if checkpoint is not None:
        file = Path(checkpoint).expanduser()
        document["model"]["checkpoint"] = {"sha256": _file_sha256(file) if file.is_file() else str(file)}
        if not recipe.pretrain.from_checkpoint:  # the checkpoint replaces pretraining
            document.pop("pretrain", None)
    if recipe.data.root is not None:
        document["data"]["root"] = str(Path(recipe.data.root).expanduser().resolve())
    return document


def recipe_fingerprint(recipe: Recipe) -> str:
    """SHA-256 of the canonical JSON of :func:`fingerprint_document`."""
    text = json.dumps(fingerprint_document(recipe), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def owner_record(recipe: Recipe, source: str | None) -> dict[str, Any]:
    from robprune_deploy import __version__

    return {
        "fingerprint": recipe_fingerprint(recipe),
        "version": __version__,
        "recipe": source or "<python API>",
        "excluded": list(EXCLUDED_SECTIONS),
    }


# --- state.json ------------------------------------------------------------------------------------
def read_state(out_dir: Path) -> dict[str, Any] | None:
    """``{"owner": ..., "stages": {...}}`` of ``out_dir``, or None without a ``state.json``.

    :raises OutputError: when the file is damaged or was written before folders had owners.
    """
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    hint = "use another --out, or --force to clear its stage files and start over"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"{path}: damaged, not readable JSON ({str(exc).splitlines()[0][:80]}); {hint}") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        raise OutputError(f"{path}: damaged, it does not hold the stages of a run; {hint}")
    owner = state.get("owner")
    if not isinstance(owner, dict) or not isinstance(owner.get("fingerprint"), str):
        raise OutputError(f"{path}: records no owner recipe (written by an older robprune-deploy?); {hint}")
    return state


def write_state(out_dir: Path, state: dict[str, Any]) -> None:
    write_json(out_dir / STATE_FILE, state)


# --- the output path ---------------------------------------------------------------------------------
def _name_too_long(path: Path, flag: str) -> OutputError:
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)))
    size = len(os.fsencode(longest))
    if size > 255:  # NAME_MAX of every common file system
        what = f"the name {longest[:24] + '...'!r} ({size} bytes)"
    else:
        what = f"the path ({len(os.fsencode(str(path)))} bytes)"
    return OutputError(f"{flag}: {what} is longer than the file system allows (File name too long)")


def check_output_path(path: Path, flag: str = "--out") -> None:
    """``path`` can be (or become) a folder this process writes into; nothing is created.

    :raises OutputError: for a NUL or control character in the path, a name longer than the file
        system allows, a path that is a file or lies under a file, a folder that is not writable,
        or a symbolic link inside the folder where robprune-deploy writes (:func:`link_inside`).
    """
    text = str(path)
    if "\x00" in text:
        raise OutputError(f"{flag} {text!r}: the path contains a NUL character")
    bad = control_character(text)
    if bad is not None:
        raise OutputError(f"{flag} {text!r}: the path contains a control character ({bad!r})")
    try:
        _check_folder(path, flag)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _name_too_long(path, flag) from None
        raise OutputError(f"{flag} {path}: cannot be used ({exc.strerror or exc})") from None


def _check_folder(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, not a folder")
    ancestor = path
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise OutputError(f"{flag} {path}: {ancestor} is a dangling symbolic link")
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise OutputError(f"{flag} {path}: {ancestor} is a file, so no folder can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {ancestor} is not writable")
    link = link_inside(path) if path.is_dir() else None
    if link is not None:
        raise OutputError(
            f"{flag} {path}: {link.relative_to(path)} is a symbolic link (to {os.readlink(link)}); robprune-deploy "
            f"never writes or deletes through a link: remove it, or use another {flag}"
        )


def check_outside_data(path: Path, data_root: str | Path | None, flag: str = "--out") -> None:
    """:raises OutputError: when ``path`` is the recipe's ``data.root`` or lies inside it."""
    if data_root is None:
        return
    root = Path(data_root).expanduser().resolve()
    target = path.expanduser().resolve()
    if target == root or root in target.parents:
        raise OutputError(
            f"{flag} {path}: lies inside the recipe's data.root {root}; robprune-deploy never writes into a "
            f"dataset: use a folder outside it"
        )


def make_output_folder(path: Path, flag: str = "--out") -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot be created ({exc.strerror or exc})") from None


# --- the lock --------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except (OSError, OverflowError):
        return False
    return True


class FolderLock:
    """An advisory lock on ``out_dir``: ``.robprune.lock`` holds the owner's pid, host and start time."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self.token = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:2]),
        }
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:  # unreadable: a writer killed between create and write, or foreign
            try:
                age = datetime.datetime.now().timestamp() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > _STALE_GARBAGE_LOCK_S
        if not holder:
            return True  # gone meanwhile
        pid = holder.get("pid")
        return holder.get("host") == self.token["host"] and isinstance(pid, int) and not _alive(pid)

    def acquire(self) -> None:
        """:raises OutputError: naming the holder while another live process holds the folder."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if self._stale(holder):
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()  # taken over: its process is gone
                    continue
                who = (
                    f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
                    if holder
                    else "another process (unreadable lock)"
                )
                raise OutputError(
                    f"{self.path.parent}: in use by {who}; wait for it to finish, or delete {self.path} "
                    f"if that process is gone"
                ) from None
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                    raise OutputError(f"{self.path.parent}: not writable ({exc.strerror})") from None
                raise
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.token, handle)
            self.held = True
            return
        raise OutputError(f"{self.path}: could not be taken (other processes keep replacing it)")

    def release(self) -> None:
        if self.held and self._holder() == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False


# --- claiming a folder ---------------------------------------------------------------------------
def _describe(owner: dict[str, Any]) -> str:
    return f"recipe {owner.get('recipe')} (fingerprint {str(owner.get('fingerprint'))[:12]})"


def claim(run: RunState, *, fresh: bool) -> None:
    """Make ``run.out_dir`` this run's folder (the caller holds its lock).

    :param fresh: forget completed stages (``run`` without ``--resume``); stage commands keep them.
    :raises OutputError: when the folder holds another recipe's results, or robprune files without
        a ``state.json``, and ``run.force`` is not set.
    """
    out = run.out_dir
    record = owner_record(run.recipe, run.recipe_source)
    if run.force:
        checkpoint = run.recipe.model.checkpoint
        inputs = {Path(checkpoint).expanduser().resolve()} if checkpoint is not None else set()
        kept = [p for p in project_files(out) if p.resolve() in inputs]
        if kept:
            raise OutputError(
                f"--force would delete {kept[0]}, this run's model.checkpoint; copy it out of --out {out} first"
            )
        clear_stage_files(out)
    state = read_state(out)
    if state is None:
        leftovers = [p.name for p in project_files(out) if p.name != ERROR_LOG]
        if leftovers:
            raise OutputError(
                f"--out {out}: holds robprune files ({', '.join(leftovers[:4])}) but no {STATE_FILE}, so their "
                f"recipe is unknown; use another --out, or --force to clear them and start over"
            )
        state = {"owner": record, "stages": {}}
    else:
        owner = state["owner"]
        if owner["fingerprint"] != record["fingerprint"]:
            same_file = owner.get("recipe") == record["recipe"]
            how = "other contents or --set overrides, or an edited base it extends"
            raise OutputError(
                f"--out {out}: holds the results of {_describe(owner)}, not of {_describe(record)}"
                + (f" (the same file with {how})" if same_file else "")
                + "; resume it with its own recipe, use another --out, or add --force to clear its stage "
                "files and start over"
            )
        if owner.get("version") != record["version"]:
            raise OutputError(
                f"--out {out}: written by robprune-deploy {owner.get('version')}, this is {record['version']}; "
                f"its stage files may not fit this version: use another --out, or --force to start over"
            )
        if fresh:
            state["stages"] = {}
        state["owner"] = record
    write_state(out, state)


@contextlib.contextmanager
def owned_output(ctx: RunContext, *, fresh: bool) -> Iterator[None]:
    """Preflight, then open the tracking store, then create, lock and claim ``ctx.out_dir``; the lock
    is released on exit.

    Nothing is created before the inputs passed preflight, so a refused run leaves no folder and no
    new tracking database. Only the main rank (the one that writes) locks and claims.
    """
    check_output_path(ctx.out_dir)
    check_outside_data(ctx.out_dir, ctx.recipe.data.root)
    ctx.preflight()
    ctx.tracker.open()
    if not ctx.is_main:
        yield
        return
    make_output_folder(ctx.out_dir)
    lock = FolderLock(ctx.out_dir)
    lock.acquire()
    try:
        claim(ctx.state, fresh=fresh)
        yield
    finally:
        lock.release()


# --- a gate's report folder ------------------------------------------------------------------------
def _refuse_run_folder_of_another_recipe(report: Path, recipe: Recipe) -> None:
    """A run's folder takes the report of a gate of its own recipe only: another recipe's gate
    files there would be read as that run's verdict."""
    if not (report / STATE_FILE).is_file():
        return
    try:
        state = read_state(report)
    except OutputError:  # damaged: still a run's folder
        state = None
    owner = state["owner"] if state is not None else None
    if owner is not None and owner["fingerprint"] == recipe_fingerprint(recipe):
        return
    whose = _describe(owner) if owner is not None else "an unknown recipe (damaged)"
    raise OutputError(
        f"--report {report}: holds {STATE_FILE} of a run of {whose}, not of this gate's recipe; its gate files "
        f"would be replaced: use another --report"
    )


@contextlib.contextmanager
def owned_report(report: Path, recipe: Recipe) -> Iterator[None]:
    """``--report`` gets the rules of ``--out``: checked, outside ``data.root``, not the run folder of
    another recipe, created and locked while the gate works (a second gate on it is refused).

    A report folder this created and left empty (the gate refused its input) is removed again.
    """
    check_output_path(report, "--report")
    check_outside_data(report, recipe.data.root, "--report")
    _refuse_run_folder_of_another_recipe(report, recipe)
    created = not report.exists()
    make_output_folder(report, "--report")
    try:
        lock = FolderLock(report)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    finally:
        if created:
            with contextlib.suppress(OSError):  # only when empty
                report.rmdir()
