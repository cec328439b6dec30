"""Registry discovery through entry points and errors for unknown names."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from robprune_deploy import ALGORITHMS, CompressionAlgorithm, RobPruneError, UnknownNameError
from robprune_deploy.algorithms import BUILT_IN_DISTRIBUTIONS
from robprune_deploy.cli.main import main
from robprune_deploy.registry import Registry

BUILT_IN = {"s2ap", "hydra", "mrpf", "l1_filter", "nncf_magnitude"}


def test_built_in_algorithms_are_discovered_through_entry_points() -> None:
    assert set(ALGORITHMS.names()) >= BUILT_IN, ALGORITHMS.broken()
    for name in BUILT_IN:
        cls = ALGORITHMS.get(name)
        assert issubclass(cls, CompressionAlgorithm)
        assert ALGORITHMS.provider(name) in BUILT_IN_DISTRIBUTIONS  # the core or a plugin of plugins/


def test_unknown_algorithm_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        ALGORITHMS.get("s2pa")
    message = str(info.value)
    assert message.startswith("unknown algorithm 's2pa'")
    assert all(name in message for name in BUILT_IN)


def test_third_party_plugin_registers_through_its_own_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package that only declares the entry point (no import of it by the core) is found."""
    package = tmp_path / "acme_prune"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from robprune_deploy import CompressionAlgorithm

            class AcmePrune(CompressionAlgorithm):
                description = "third-party test plugin"

                def apply(self, model, context):
                    raise NotImplementedError
            """
        )
    )
    dist = tmp_path / "acme_prune-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-prune\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[robprune_deploy.algorithms]\nacme = acme_prune:AcmePrune\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[type[CompressionAlgorithm]] = Registry("algorithm", "robprune_deploy.algorithms")
    assert "acme" in registry
    assert registry.get("acme").description == "third-party test plugin"
    assert registry.provider("acme") == "acme-prune"
    sys.modules.pop("acme_prune", None)


def test_broken_plugin_does_not_hide_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "broken_prune-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-prune\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[robprune_deploy.algorithms]\nbroken = no_such_module:Nope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[type[CompressionAlgorithm]] = Registry("algorithm", "robprune_deploy.algorithms")
    assert set(registry.names()) >= BUILT_IN
    with pytest.raises(RobPruneError, match=r"broken.*failed to load"):
        registry.get("broken")


def test_algorithms_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    for name in BUILT_IN:
        assert name in out
    assert "unstructured" in out and "channel" in out and "robprune-deploy" in out


def test_top_level_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "robustness gate" in out
    assert "``" not in out and ":param" not in out  # no reStructuredText from the module docstring
