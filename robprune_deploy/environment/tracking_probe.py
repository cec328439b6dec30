"""Whether an MLflow tracking URI answers, checked without MLflow and within a few seconds.

A run logs to the store at its first stage; finding out then that a server is unreachable or a
database folder is read-only wastes the stages before. The probe opens an sqlite store read-only
(or checks that its folder accepts a new file), asks an HTTP server's ``/health`` endpoint, and
checks a file store's folder. Other schemes (databricks, SQL servers) are reported as unchecked.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class TrackingProbe:
    """:param answers: True (it answers), False (it does not), None (this scheme is not checked)."""

    uri: str
    answers: bool | None
    detail: str


def _writable_folder(folder: Path) -> tuple[bool, str]:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return False, f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return False, f"folder {existing} is not writable"
    return True, f"will be created in {folder}" if existing != folder else f"folder {folder} is writable"


def _probe_sqlite(uri: str, path: Path, timeout: float) -> TrackingProbe:
    if not path.exists():
        ok, detail = _writable_folder(path.parent)
        return TrackingProbe(uri, ok, f"no database yet; {detail}")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            tables = connection.execute("select count(*) from sqlite_master where type = 'table'").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return TrackingProbe(uri, False, f"sqlite database {path}: {exc}")
    if not os.access(path, os.W_OK):
        return TrackingProbe(uri, False, f"sqlite database {path} is read-only")
    return TrackingProbe(uri, True, f"sqlite database {path} ({tables} tables)")


def _probe_http(uri: str, timeout: float) -> TrackingProbe:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return TrackingProbe(uri, True, f"GET {url}: HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        # A server that answers with an error still answers: MLflow behind a proxy may lack /health.
        return TrackingProbe(uri, exc.code < 500, f"GET {url}: HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return TrackingProbe(uri, False, f"GET {url}: no answer within {timeout:g} s ({reason})")


def probe_tracking_uri(uri: str, timeout: float = 3.0) -> TrackingProbe:
    """Check the MLflow store at ``uri`` (sqlite, http(s), file or a plain path), waiting at most ``timeout`` s."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        raw = uri.split("://", 1)[1] if "://" in uri else ""
        if raw in ("", "/", "/:memory:"):
            return TrackingProbe(uri, True, "in-memory sqlite store")
        return _probe_sqlite(uri, Path(unquote(raw[1:] if raw.startswith("/") else raw)), timeout)
    if scheme in ("http", "https"):
        return _probe_http(uri, timeout)
    if scheme in ("", "file") or len(scheme) == 1:  # a plain path (a Windows drive letter parses as a scheme)
        folder = Path(unquote(parsed.path) if scheme == "file" else uri)
        ok, detail = _writable_folder(folder)
        return TrackingProbe(uri, ok, f"file store: {detail}")
    return TrackingProbe(uri, None, f"scheme {scheme!r} is not checked by the doctor")
