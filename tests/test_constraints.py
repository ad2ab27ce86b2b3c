"""constraints.txt pins every distribution the project installs (the Dockerfile and CI install with it), within
what pyproject.toml allows; deploy/refresh-constraints.sh regenerates it."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: not a pin (name==version): {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = Version(match.group(2))
    return found


def test_every_requirement_of_the_project_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(text) for text in (*project["dependencies"],
                                                   *project["optional-dependencies"]["test"])]
    pinned = pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside pyproject.toml's {requirement.specifier}")
    assert "athena-spark-supervisor" not in pinned and "pip" not in pinned


def test_the_refresh_script_is_documented_and_executable() -> None:
    script = REPO / "deploy" / "refresh-constraints.sh"
    assert script.stat().st_mode & 0o111
    assert "refresh-constraints.sh" in CONSTRAINTS.read_text(encoding="utf-8").splitlines()[2]
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "deploy/refresh-constraints.sh" in (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert 'PIP_CONSTRAINT="$PWD/constraints.txt"' in (REPO / ".ci" / "run").read_text(encoding="utf-8")
