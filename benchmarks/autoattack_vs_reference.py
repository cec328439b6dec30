"""The project's APGD-CE, APGD-T, FAB-T and FMN against the reference implementations, same model.

The reference code is not on PyPI; point the script at local copies (nothing is downloaded):
``--autoattack`` is a checkout of github.com/fra31/auto-attack (the folder holding ``autoattack/``),
``--adv-lib`` the folder holding ``adv_lib/`` (PyPI's adv-lib wheel, unpacked; only
``adv_lib/attacks/fast_minimum_norm.py`` and ``adv_lib/utils`` are used). The model is the
adversarially pretrained digits CNN of the digits benchmarks (cached), or ``--checkpoint``.

    python benchmarks/autoattack_vs_reference.py --autoattack ~/src/auto-attack --adv-lib ~/src/adv_lib --examples 120

Prints, per attack, the robust accuracy (or the survivors) of both implementations and their times.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
from digits_bench import digits, pretrained  # type: ignore[import-not-found]

from robprune_deploy.attacks.apgd import apgd
from robprune_deploy.attacks.fab import fab_targeted
from robprune_deploy.attacks.fmn import fmn_linf
from robprune_deploy.checkpoints import load_model_weights
from robprune_deploy.models import build_model


def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _timed(action):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autoattack", type=Path, required=True, help="checkout of fra31/auto-attack")
    parser.add_argument("--adv-lib", type=Path, default=None, help="folder holding adv_lib/ (for FMN)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="digits_cnn weights (default: the cached one)")
    parser.add_argument("--examples", type=int, default=120)
    parser.add_argument("--eps", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--targets", type=int, default=9)
    parser.add_argument("--cache", type=Path, default=Path(".bench_cache"))
    args = parser.parse_args()
    sys.path.insert(0, str(args.autoattack))
    from autoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # type: ignore[import-not-found]
    from autoattack.fab_pt import FABAttack_PT  # type: ignore[import-not-found]

    data = digits()
    if args.checkpoint is not None:
        model = load_model_weights(build_model("digits_cnn", 10, 1, data.mean, data.std), args.checkpoint)
    else:
        args.cache.mkdir(exist_ok=True)
        model = pretrained(data, 20, args.cache)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = data.test.tensors[0][: args.examples], data.test.tensors[1][: args.examples]
    keep = _correct(model, x, y)
    xs, ys, n, eps = x[keep], y[keep], len(y), args.eps
    print(f"{n} examples, clean accuracy {keep.float().mean():.4f}, eps {eps}")

    ours, t_ours = _timed(lambda: apgd(model, xs, ys, eps, steps=args.steps).x_adv)
    ref = APGDAttack(model, n_iter=args.steps, eps=eps, seed=0, loss="ce", device="cpu", n_restarts=1)
    theirs, t_ref = _timed(lambda: ref.perturb(xs, ys))
    a, b = _correct(model, ours, ys), _correct(model, theirs, ys)
    print(f"APGD-CE  robust: ours {a.sum() / n:.4f} ({t_ours:.1f} s)  reference {b.sum() / n:.4f} ({t_ref:.1f} s)")

    alive = a & b
    xk, yk = xs[alive], ys[alive]
    with torch.no_grad():
        order = model(xk).argsort(1, descending=True)

    def our_targeted(attack: str) -> int:
        left = torch.ones(len(yk), dtype=torch.bool)
        for rank in range(1, args.targets + 1):
            idx = left.nonzero().squeeze(1)
            if attack == "apgd-t":
                adv = apgd(model, xk[idx], yk[idx], eps, steps=args.steps, loss="dlr-targeted", target=order[idx, rank])
                broken = ~_correct(model, adv.x_adv, yk[idx])
            else:
                outcome, distance = fab_targeted(model, xk[idx], yk[idx], order[idx, rank], steps=args.steps)
                broken = ~_correct(model, outcome.x_adv, yk[idx]) & (distance <= eps)
            left[idx[broken]] = False
        return int(left.sum())

    common = {"n_iter": args.steps, "eps": eps, "seed": 0, "device": "cpu", "n_target_classes": args.targets}
    for name, reference in (
        ("apgd-t", APGDAttack_targeted(model, **common)),
        ("fab-t", FABAttack_PT(model, targeted=True, **common)),
    ):
        left, t_ours = _timed(lambda name=name: our_targeted(name))
        adv, t_ref = _timed(lambda reference=reference: reference.perturb(xk, yk))
        far = (adv - xk).flatten(1).abs().amax(1) > eps + 1e-6
        left_ref = int((_correct(model, adv, yk) | far).sum())
        print(
            f"{name.upper():8} survivors of {len(yk)}: ours {left} ({t_ours:.1f} s)  "
            f"reference {left_ref} ({t_ref:.1f} s)"
        )

    if args.adv_lib is not None:
        sys.path.insert(0, str(args.adv_lib))
        spec = importlib.util.spec_from_file_location(
            "fmn_reference", args.adv_lib / "adv_lib/attacks/fast_minimum_norm.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        (_, d_ours), t_ours = _timed(lambda: fmn_linf(model, x, y, steps=args.steps))
        x_ref, t_ref = _timed(lambda: module.fmn(model, x, y, norm=float("inf"), steps=args.steps))
        d_ref = (x_ref - x).flatten(1).abs().amax(1)
        d_ref[_correct(model, x_ref, y)] = float("inf")
        same = (d_ours - d_ref).abs()[torch.isfinite(d_ours) & torch.isfinite(d_ref)]
        print(
            f"FMN      median distance: ours {d_ours.median():.4f} ({t_ours:.1f} s)  reference {d_ref.median():.4f} "
            f"({t_ref:.1f} s); largest per-example difference {same.max():.2e}"
        )


if __name__ == "__main__":
    main()
