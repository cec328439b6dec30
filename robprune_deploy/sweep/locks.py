"""One process at a time creates a new sqlite database's tables.

Workers started together on a new sqlite file (Optuna's study database, MLflow's store) would each
create the tables, and all but one fail ("table ... already exists"). The first takes an advisory
lock named after the database, in the temporary folder (nothing is left beside the user's files),
creates the tables and lets go; the others then find them made. sqlite is a one-machine store, so
a lock on this machine is enough; database servers handle concurrent clients themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; start the first worker alone there
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def creating(database: Path | None) -> Iterator[None]:
    """Hold the creation lock of the sqlite file ``database`` (None: no lock is needed)."""
    if database is None or fcntl is None:
        yield
        return
    key = hashlib.sha256(str(database.expanduser().resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"robprune-sqlite-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL; None for another database or an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)
