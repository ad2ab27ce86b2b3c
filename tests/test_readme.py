"""README.md stays true: the quick-start commands, every metric, every subcommand, every IAM action."""

from __future__ import annotations

import re
from pathlib import Path

from supervisor.cli import COMMAND_MODULES
from supervisor.gateway import IAM_ACTIONS
from supervisor.metrics import Metrics, exported_metric_names

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def documented_metric(family_name: str, family_type: str) -> str:
    """How the README names a family: counters with ``_total``, the rest by their family name."""
    return f"{family_name}_total" if family_type == "counter" else family_name


def test_quick_start_commands_are_verbatim() -> None:
    quick_start = _section("Quick start")
    assert "pip install -e . && athena-supervisor demo" in quick_start
    # CI (.ci/run) runs this line verbatim.
    assert "pip install -e '.[test]' && python -m pytest -q" in quick_start


def test_metrics_reference_lists_every_exported_metric() -> None:
    reference = _section("Metrics reference")
    metrics = Metrics()
    expected = {documented_metric(family.name, family.type) for family in metrics.registry.collect()}
    missing = sorted(name for name in expected if f"`{name}`" not in reference)
    assert not missing, f"README's metrics reference lacks {missing}"
    exported = exported_metric_names(metrics) | expected
    documented = set(re.findall(r"`(athena_supervisor_[a-z_]+)`", reference))
    unknown = sorted(documented - exported)
    assert not unknown, f"README documents metrics that do not exist: {unknown}"


def test_cli_reference_lists_every_subcommand() -> None:
    reference = _section("CLI reference")
    for module in COMMAND_MODULES:
        command = module.rsplit(".", 1)[1].replace("_", "-")
        assert f"`athena-supervisor {command}" in reference, f"README's CLI reference lacks {command}"


def test_iam_actions_are_all_listed() -> None:
    aws = _section("Running against AWS")
    missing = sorted(action for action in IAM_ACTIONS if f"`{action}`" not in aws)
    assert not missing, f"README's IAM list lacks {missing}"


def test_documentation_links_point_to_files() -> None:
    root = Path(__file__).resolve().parent.parent
    for target in re.findall(r"\]\(([^)#]+)\)", _section("Documentation")):
        assert (root / target).exists(), f"README links to missing {target}"
