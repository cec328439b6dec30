"""Bounded waits on a tracking server: a server that does not answer fails fast, with its URI.

MLflow's own HTTP client retries 7 times with exponential back-off and a 120 s timeout per request,
so a stopped server stalls a run or a gate for many minutes before anything is said. Before the
first MLflow call, :func:`bound_http_waits` sets MLflow's retry and timeout variables from the
recipe (``tracking.timeout_s``, ``tracking.retries``; variables the user exported win), and
:func:`check_server` asks an ``http(s)://`` server for ``/health`` within the same budget: with the
defaults it gives up after at most ``3 x 4 s`` plus two short pauses, inside 15 seconds.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from robprune_deploy.errors import TrackingError

_PAUSE_S = 0.5
_SET_BY_US: dict[str, str] = {}
_budget = (4.0, 2)


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
