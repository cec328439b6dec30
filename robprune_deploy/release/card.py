"""``MODEL_CARD.md``: the release record as a model card in the Hugging Face layout.

YAML front matter (``tags``, ``library_name`` and a ``model-index`` of the candidate's figures, as
the Hub reads them), then the sections Model details, Uses, Evaluation, Robustness and
Limitations. Every number comes from the record, so the card says nothing the record does not.
"""

from __future__ import annotations

from typing import Any

import yaml

_NAMES = {
    "clean_acc": "clean accuracy",
    "pgd_acc": "PGD robust accuracy",
    "square_acc": "Square (black-box) robust accuracy",
    "autoattack_acc": "AutoAttack robust accuracy",
    "whitebox_acc": "white-box ensemble robust accuracy",
    "agreement": "argmax agreement with the reference",
}


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _model_name(record: dict[str, Any]) -> str:
    registered = record["model"].get("registered")
    if registered:
        return f"{registered['name']} v{registered['version']}"
    return str(record["model"].get("file") or record["model"].get("source"))


def _front_matter(record: dict[str, Any], first: dict[str, Any]) -> str:
    recipe = record["recipe"]["resolved"]
    dataset = recipe.get("data", {}).get("name", "unknown")
    candidate = first.get("candidate", {})
    metrics = [
        {
            "type": "accuracy" if name == "clean_acc" else name,
            "name": _NAMES[name],
            "value": round(candidate[name]["value"], 4),
        }
        for name in _NAMES
        if name in candidate
    ]
    meta = {
        "library_name": "onnx",
        "tags": ["robprune", "onnx", "adversarial-robustness", "pruning", record.get("precision", "fp32")],
        "pipeline_tag": "image-classification",
        "model-index": [
            {
                "name": _model_name(record),
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image classification"},
                        "dataset": {"name": dataset, "type": dataset, "split": record["examples"]["split"]},
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _figure_rows(figures: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| model | runtime | figure | value | 95% interval | examples |", "|---|---|---|---:|---|---:|"]
    for runtime, roles in figures.items():
        for role, named in roles.items():
            for name in (n for n in _NAMES if n in named):
                f = named[name]
                i = f.get("interval")
                interval = f"{_pct(i['low'])} - {_pct(i['high'])} ({i['method']})" if i else "exact"
                shown = "drop (baseline - candidate, paired)" if role == "drop" else role
                cells = [shown, runtime, _NAMES[name], _pct(f["value"]), interval, str(f.get("examples", ""))]
                rows.append("| " + " | ".join(cells) + " |")
    return rows


def _check_row(check: dict[str, Any]) -> str:
    measured = "n/a" if check["measured"] is None else f"{check['measured']:.4f}"
    status = check.get("status") or ("pass" if check["passed"] else "fail")  # records before statuses have none
    result = status if status == "pass" else status.upper()
    return f"| {check['name']} | {measured} | {check['op']} {check['threshold']:.4f} | {result} |"


def render_card(record: dict[str, Any]) -> str:
    """The model card of ``record`` (a ``release.json``'s contents)."""
    recipe = record["recipe"]["resolved"]
    figures = record["figures"]
    first: dict[str, Any] = next(iter(figures.values()), {})
    attack = recipe.get("attack", {})
    compression = recipe.get("compression", {})
    verdict = record["verdict"]
    state = "PASSED" if verdict["passed"] else "FAILED (" + ", ".join(verdict["failures"]) + ")"
    runtimes = ", ".join(f"{name} on {r['provider']}" for name, r in record["runtime"]["runtimes"].items())
    baseline = record.get("baseline")
    examples = record["examples"]
    code = record["code"]
    lines = [
        _front_matter(record, first),
        f"# Model card: {_model_name(record)}",
        "",
        "## Model details",
        "",
        f"- Architecture: `{recipe.get('model', {}).get('name')}`, {record.get('precision', 'fp32')} ONNX graph",
        f"- Compression (the recipe's): `{compression.get('algorithm')}` at ratio {compression.get('ratio')}",
        f"- Model SHA-256: `{record['model']['sha256']}`",
        f"- Baseline: `{baseline['source']}` (SHA-256 `{baseline['sha256']}`)" if baseline else "- Baseline: none",
        f"- Recipe SHA-256: `{record['recipe']['sha256']}`",
        f"- Built with robprune-deploy {code['robprune_deploy']}"
        + (f" (commit {code['git_commit']})" if code.get("git_commit") else ""),
        "",
        "## Uses",
        "",
        f"Image classification on `{recipe.get('data', {}).get('name')}`-like inputs, served under {runtimes}. "
        f"Its robustness was measured against L-inf perturbations of at most eps = {attack.get('eps')}; it says "
        "nothing about larger perturbations, other threat models or other data.",
        "",
        "## Evaluation",
        "",
        f"{examples['count']} examples of the `{examples['split']}` split of `{examples['dataset']}` "
        f"(seed {examples['seed']}, content SHA-256 `{examples['sha256']}`), measured under {runtimes}. "
        f"Release gate: **{state}**.",
        "",
        "| check | measured | threshold | result |",
        "|---|---:|---:|:---:|",
        *[_check_row(c) for c in record["checks"]],
        "",
        "## Robustness",
        "",
        *_figure_rows(figures),
        "",
        "## Limitations",
        "",
        f"- Every figure is measured on {examples['count']} examples: the 95% intervals above are the uncertainty "
        "of that sample, not of the attacks, which give upper bounds on robust accuracy.",
        "- The robust accuracies hold for the attacks and budgets of the recipe (see `release.json`); a stronger "
        "attack can find more adversarial examples.",
        "- Latency and speed-up were measured on the machine that ran the gate and do not transfer to other hardware.",
        "",
        "Check this card's source with `robprune verify release.json MODEL` (see the release gate documentation).",
        "",
    ]
    return "\n".join(lines)
