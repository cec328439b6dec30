"""The format of a committed benchmark result, and its rendering as Markdown tables.

A results file (``benchmarks/results/*.json``) is one JSON object with

- ``provenance``: how the figures were made (:func:`provenance.provenance`: command, commit, date,
  hardware, package versions). Figures copied from an earlier README, before their benchmark saved
  JSON, carry ``"transcribed": true`` and ``transcribed_from`` (the README commit that first printed
  them); what was not recorded then is ``null``, never guessed.
- either ``tables``: ``{name: {"columns": [...], "rows": [[cell, ...], ...]}}``, or ``renderer``:
  ``"module:function"`` (a module in ``benchmarks/``) that computes those tables from the file's own
  raw figures.

A column is ``{"name": str, "align": "l"|"r", "template": str}``; a cell is text (as it is), a number
or a list of numbers (put into the column's ``template`` with ``str.format``, default ``"{}"``), or
null (empty). ``benchmarks/render_results.py`` puts the rendered tables into the docs.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROVENANCE_KEYS = ("command", "commit", "date", "hardware", "packages")


def column(name: str, template: str = "{}", align: str = "r") -> dict[str, str]:
    return {"name": name, "template": template, "align": align}


def text_column(name: str) -> dict[str, str]:
    return {"name": name, "template": "{}", "align": "l"}


def table(columns: Sequence[dict[str, str]], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {"columns": list(columns), "rows": [list(row) for row in rows]}


def results_file(provenance: dict[str, Any], tables: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    """The object a benchmark writes: its provenance, its tables (or raw figures and a ``renderer``)."""
    return {"provenance": provenance, **({"tables": tables} if tables is not None else {}), **data}


def problems(document: dict[str, Any]) -> list[str]:
    """What makes ``document`` not a results file: missing provenance keys, tables without rows."""
    found = []
    prov = document.get("provenance")
    if not isinstance(prov, dict):
        return ["no provenance"]
    found += [f"provenance has no {key!r}" for key in PROVENANCE_KEYS if key not in prov]
    if not prov.get("command"):
        found.append("provenance.command is empty")
    if prov.get("transcribed") and not prov.get("transcribed_from"):
        found.append("transcribed figures without transcribed_from")
    if "tables" not in document and "renderer" not in document:
        found.append("neither tables nor renderer")
    return found


def tables_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tables of ``document``: stored, or computed by its ``renderer`` from its raw figures."""
    if "tables" in document:
        tables: dict[str, dict[str, Any]] = document["tables"]
        return tables
    module, _, function = document["renderer"].partition(":")
    if str(HERE) not in sys.path:  # the renderers are scripts' modules in benchmarks/
        sys.path.insert(0, str(HERE))
    computed: dict[str, dict[str, Any]] = getattr(importlib.import_module(module), function)(document)
    return computed


def _cell(value: Any, template: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "" if any(v is None for v in value) else template.format(*value)
    return template.format(value)


def render_table(spec: dict[str, Any]) -> str:
    """One table as Markdown."""
    columns = spec["columns"]
    marks = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(c["name"] for c in columns) + " |",
        "|" + "|".join(marks[c.get("align", "r")] for c in columns) + "|",
    ]
    for row in spec["rows"]:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row}")
        cells = [_cell(v, c.get("template", "{}")).replace("|", "\\|") for v, c in zip(row, columns, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _commit(commit: str) -> str:
    dirty = commit.endswith("-dirty")
    return f"commit {commit.removesuffix('-dirty')[:7]}" + (" with uncommitted changes" if dirty else "")


def source_line(path: str, document: dict[str, Any]) -> str:
    """One line under a table: the file, its command, and how much of its provenance was recorded."""
    prov = document["provenance"]
    parts = [f"`{prov['command']}`"]
    if prov.get("transcribed"):
        origin = prov["transcribed_from"]
        parts.append(
            f"figures transcribed from the README of {origin['commit'][:7]} ({origin['date'][:10]}); "
            "commit, date and versions of the measurement were not recorded"
        )
    else:
        hardware = prov.get("hardware") or {}
        machine = ", ".join(str(hardware[k]) for k in ("cpu", "gpu") if hardware.get(k))
        cores = f"{hardware['cores']} cores" if hardware.get("cores") else ""
        torch = (prov.get("packages") or {}).get("torch")
        recorded = [
            _commit(str(prov["commit"])) if prov.get("commit") else "",
            str(prov.get("date") or "")[:10],
            ", ".join(x for x in (machine, cores) if x),
            f"torch {torch}" if torch else "",
        ]
        parts.append("; ".join(x for x in recorded if x))
        if prov.get("note"):
            parts.append(str(prov["note"]))
    return f"Source: `{path}`: " + "; ".join(p for p in parts if p) + "."


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def render(path: Path, name: str | None = None) -> str:
    """Table ``name`` of the results file ``path`` (the only one when ``name`` is None) and its source line."""
    document = load(path)
    tables = tables_of(document)
    if name is None:
        if len(tables) != 1:
            raise ValueError(f"{path}: holds the tables {sorted(tables)}; name one")
        name = next(iter(tables))
    if name not in tables:
        raise ValueError(f"{path}: no table {name!r}; it holds {sorted(tables)}")
    shown = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    return render_table(tables[name]) + "\n\n" + source_line(str(shown), document)
