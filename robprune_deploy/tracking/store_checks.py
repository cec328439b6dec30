"""Bounded waits on a tracking server: a server that does not answer fails fast, with its URI.

MLflow's own HTTP client retries 7 times with exponential back-off and a 120 s timeout per request,
so a stopped server stalls a run or a gate for many minutes before anything is said. Before the
first MLflow call, :func:`bound_http_waits` sets MLflow's retry and timeout variables from the
recipe (``tracking.timeout_s``, ``tracking.retries``; variables the user exported win), and
:func:`check_server` asks an ``http(s)://`` server for ``/health`` within the same budget: with the
defaults it gives up after at most ``3 x 4 s`` plus two short pauses, inside 15 seconds.

A local store (``sqlite:///PATH``, ``file:///PATH`` or a plain folder) is checked by
:func:`check_store` before a run creates anything: a store MLflow could not write into, or a file
that is not an MLflow database, would otherwise fail the run in its first stage, or hours later.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from robprune_deploy.errors import TrackingError

_PAUSE_S = 0.5
_SET_BY_US: dict[str, str] = {}
_budget = (4.0, 2)


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow's sqlite store ``./mlflow.db`` (supports the registry)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _set_default(name: str, value: str) -> None:
    """Set ``name`` unless the user exported it (a value this process set earlier is replaced)."""
    if name in os.environ and os.environ[name] != _SET_BY_US.get(name):
        return
    os.environ[name] = value
    _SET_BY_US[name] = value


def bound_http_waits(timeout_s: float, retries: int) -> None:
    """Make every later MLflow HTTP request give up after ``retries`` retries of ``timeout_s`` each."""
    global _budget
    _budget = (timeout_s, retries)
    _set_default("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_s))))
    _set_default("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    _set_default("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str, timeout_s: float | None = None, retries: int | None = None) -> None:
    """Ask a tracking server for ``/health``; any HTTP answer (even an error status) will do.

    :param timeout_s: default: the last :func:`bound_http_waits` budget (4 s).
    :param retries: default: the last :func:`bound_http_waits` budget (2).
    :raises TrackingError: naming the URI, when ``retries + 1`` attempts of ``timeout_s`` each got
        no answer.
    """
    if not is_remote(uri):
        return
    timeout_s = _budget[0] if timeout_s is None else timeout_s
    retries = _budget[1] if retries is None else retries
    url = uri.rstrip("/") + "/health"
    reason = "no answer"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_PAUSE_S)
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                return
        except urllib.error.HTTPError:
            return  # it answered; MLflow reports what it does not like
        except (urllib.error.URLError, OSError, ValueError) as exc:
            detail = getattr(exc, "reason", None) or exc
            reason = str(detail).splitlines()[0] if str(detail) else type(exc).__name__
    raise TrackingError(
        f"tracking.tracking_uri {uri}: the tracking server did not answer ({retries + 1} attempts of "
        f"{timeout_s:g} s: {reason}); start it (`mlflow server`), fix the URI or --tracking-uri, "
        f"or set tracking.enabled: false"
    )


_SQLITE_HEADER = b"SQLite format 3\x00"
_MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}


def _read_only(path: Path) -> bool:
    """Not writable by this process, or marked read-only by its owner (no write permission bit at
    all): root could still write such a file, but a store someone made read-only is not for us."""
    return not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222


def _writable_folder(path: Path, uri: str) -> None:
    """``path`` is (or can be created under) a folder this process may write into."""
    ancestor = path
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TrackingError(f"tracking.tracking_uri {uri}: {ancestor} is a file, so no store can be made under it")
    if _read_only(ancestor) or not os.access(ancestor, os.X_OK):
        raise TrackingError(
            f"tracking.tracking_uri {uri}: the folder {ancestor} is read-only; MLflow cannot write there "
            f"(use a writable store, or set tracking.enabled: false)"
        )


def _sqlite_tables(path: Path) -> set[str]:
    """The table names of the SQLite file ``path``, read without writing anything."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=2.0)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def _check_sqlite_file(path: Path, uri: str) -> None:
    if path.is_dir():
        raise TrackingError(f"tracking.tracking_uri {uri}: {path} is a folder, not a database file")
    _writable_folder(path.parent, uri)  # SQLite writes its journal beside the database
    if not path.exists():
        return
    if _read_only(path):
        raise TrackingError(
            f"tracking.tracking_uri {uri}: {path} is read-only; MLflow cannot record a run in it "
            f"(use a writable store, or set tracking.enabled: false)"
        )
    with open(path, "rb") as handle:
        header = handle.read(len(_SQLITE_HEADER))
    if not header:
        return  # an empty file is an empty database
    if header != _SQLITE_HEADER:
        raise TrackingError(f"tracking.tracking_uri {uri}: {path} is not a SQLite database")
    try:
        tables = _sqlite_tables(path)
    except sqlite3.Error as exc:
        raise TrackingError(f"tracking.tracking_uri {uri}: {path} cannot be read as a database ({exc})") from None
    if tables and not tables & _MLFLOW_TABLES:
        raise TrackingError(
            f"tracking.tracking_uri {uri}: {path} is the database of something else (tables "
            f"{', '.join(sorted(tables)[:5])}); MLflow would add its tables to it"
        )


def local_store_path(uri: str) -> tuple[str, Path] | None:
    """``("sqlite" | "file", path)`` of a store on this machine; ``None`` for a server, an in-memory
    database or a scheme MLflow resolves elsewhere (``databricks``, ``postgresql``, ...)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
        return None if path in ("", ":memory:") else ("sqlite", Path(urllib.parse.unquote(path)))
    if parsed.scheme == "file":
        return "file", Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return "file", Path(uri)
    return None


def check_store(uri: str) -> None:
    """A local tracking store can take a run: a writable SQLite file that is an MLflow database (or
    will be created as one), or a writable folder. Nothing is written; servers are left to
    :func:`check_server`.

    :raises TrackingError: naming the URI and the file or folder that cannot be used.
    """
    local = local_store_path(uri)
    if local is None:
        return
    kind, path = local
    path = path.expanduser()
    if kind == "sqlite":
        _check_sqlite_file(path, uri)
    elif path.exists() and not path.is_dir():
        raise TrackingError(f"tracking.tracking_uri {uri}: {path} is a file, not an MLflow store folder")
    else:
        _writable_folder(path, uri)
