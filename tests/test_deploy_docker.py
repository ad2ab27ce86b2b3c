"""deploy/docker/Dockerfile and .dockerignore, checked by parsing them (no Docker daemon needed)."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
IMAGE_CONFIG = REPO / "deploy" / "docker" / "config.yaml"
CONFIG_PATH = "/etc/athena-supervisor/config.yaml"
STATE_DIR = "/var/lib/athena-supervisor"
RUNTIME_BASE = "python:3.11-slim"


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(item, str) for item in value), self
        return value


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Split into stages of instructions: joins ``\\`` continuations, drops comments and blank lines."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"

    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"unexpected FROM line: {line}"
            stages.append(Stage(image=words[0], name=name))
            continue
        assert stages, f"instruction before the first FROM: {line}"
        stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore excludes ``path``: an approximation of Docker's rules, enough for our file.

    The last matching pattern wins and ``!`` re-includes; a pattern that matches a parent directory
    excludes what is inside it; a leading ``**/`` matches at any depth. (Unlike Docker, ``*`` also
    matches ``/`` here, which only makes the check stricter.)
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        if glob.startswith("**/"):
            glob = glob[3:]
            names = {"/".join(c.split("/")[i:]) for c in candidates for i in range(c.count("/") + 1)}
        else:
            names = set(candidates)
        if any(fnmatch.fnmatchcase(name, glob) for name in names):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def image_config() -> dict[str, Any]:
    data = yaml.safe_load(IMAGE_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_multi_stage_build_on_the_same_slim_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    assert stages[-1].image == RUNTIME_BASE
    # The venv copied from the builder links to the builder's interpreter: it must be the same image.
    assert {stage.image for stage in stages} == {RUNTIME_BASE}
    names = [stage.name for stage in stages]
    assert len(set(names)) == len(names), "stage names must be unique"


def test_no_floating_base_image_tags(stages: list[Stage]) -> None:
    stage_names = {stage.name for stage in stages}
    for stage in stages:
        if stage.image in stage_names:
            continue
        repository, _, tag = stage.image.rpartition(":")
        assert repository and tag, f"{stage.image}: pin a tag"
        assert tag != "latest" and "latest" not in tag, f"{stage.image}: no latest tags"


def test_final_stage_runs_as_a_non_root_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the runtime stage must set USER"
    uid, _, gid = user.args.partition(":")
    assert uid not in ("root", "0"), "USER must not be root"
    # Numeric ids let Kubernetes' runAsNonRoot check the image without an override.
    assert uid.isdigit() and int(uid) >= 1000, f"use a numeric uid >= 1000, got {uid}"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # Nothing after USER may switch back to root.
    after = final.instructions[final.instructions.index(user) + 1:]
    assert not [ins for ins in after if ins.keyword == "USER"]


def test_healthcheck_hits_healthz_on_the_exposed_port(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    assert check is not None, "the runtime stage needs a HEALTHCHECK"
    assert "CMD" in check.args
    command = check.args[check.args.index("CMD") + 3:].strip()
    argv = json.loads(command) if command.startswith("[") else shlex.split(command)
    assert argv[0].startswith("python"), "slim images have no curl: probe with python"
    assert "curl" not in command and "wget" not in command
    script = " ".join(argv)
    assert "urllib" in script and "/healthz" in script
    exposed = {int(port.split("/")[0]) for ins in final.all("EXPOSE") for port in ins.args.split()}
    assert exposed == {9464}
    assert f":{next(iter(exposed))}/healthz" in script


def test_exposed_port_is_the_port_the_image_config_listens_on(final: Stage) -> None:
    exposed = {int(port.split("/")[0]) for ins in final.all("EXPOSE") for port in ins.args.split()}
    http = image_config()["http"]
    assert exposed == {http["port"]}
    assert http["host"] == "0.0.0.0", "in a container the server must listen on every interface"


def test_entrypoint_and_cmd_run_the_daemon_on_the_mounted_config(final: Stage) -> None:
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None and cmd is not None
    assert entrypoint.exec_form() == ["athena-supervisor"]
    assert cmd.exec_form() == ["run", "--config", CONFIG_PATH]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "athena-supervisor" in scripts, "ENTRYPOINT must be the console script pyproject installs"


def test_journal_lives_on_the_state_volume(final: Stage) -> None:
    volumes: list[str] = []
    for ins in final.all("VOLUME"):
        volumes += ins.exec_form() or ins.args.split()
    assert volumes == [STATE_DIR]
    journal = image_config()["journal"]["path"]
    assert journal.startswith(STATE_DIR + "/")
    stop_signal = final.last("STOPSIGNAL")
    assert stop_signal is None or stop_signal.args == "SIGTERM", "the daemon drains on SIGTERM"


def test_copy_sources_exist_and_are_in_the_build_context(
    stages: list[Stage], ignore_patterns: list[str]
) -> None:
    copies = [ins for stage in stages for ins in stage.all("COPY") + stage.all("ADD")]
    assert copies
    for ins in copies:
        words = shlex.split(ins.args)
        if any(word.startswith("--from") for word in words):
            continue
        assert ins.keyword == "COPY", "use COPY, not ADD"
        sources = [word for word in words if not word.startswith("--")][:-1]
        assert sources, ins
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY source {source} does not exist in the repository"
            assert not dockerignore_excludes(ignore_patterns, source), f".dockerignore excludes {source}"
            if path.is_dir():
                for file in path.rglob("*.py"):
                    relative = file.relative_to(REPO).as_posix()
                    assert not dockerignore_excludes(ignore_patterns, relative), relative
    copied = {ins.args.split()[-2] for ins in copies if "--from" not in ins.args}
    assert "deploy/docker/config.yaml" in copied


def test_production_image_leaves_the_emulator_out(stages: list[Stage], ignore_patterns: list[str]) -> None:
    """The image runs the daemon only: the emulator package is neither copied nor in the build context."""
    for ins in (ins for stage in stages for ins in stage.all("COPY") + stage.all("ADD")):
        words = [word for word in shlex.split(ins.args) if not word.startswith("--")]
        if "--from" in ins.args:
            continue
        for source in words[:-1]:
            normalized = source.strip("/").removeprefix("./")
            assert normalized not in (".", "*"), f"{ins.keyword} {ins.args} copies the whole repository"
            assert not normalized.startswith("athena_spark_emulator"), f"{ins.keyword} {ins.args} copies the emulator"
    for path in ("athena_spark_emulator/__init__.py", "athena_spark_emulator/server.py"):
        assert dockerignore_excludes(ignore_patterns, path), f".dockerignore should exclude {path}"


def test_dockerignore_keeps_secrets_and_local_state_out(ignore_patterns: list[str]) -> None:
    for path in (".git/config", ".venv/bin/python", "tests/test_cli.py", "journal.db",
                 "supervisor/__pycache__/cli.cpython-311.pyc", "deploy/kubernetes/configmap.yaml"):
        assert dockerignore_excludes(ignore_patterns, path), f".dockerignore should exclude {path}"


def test_dockerignore_matcher_semantics() -> None:
    patterns = ["deploy/*", "!deploy/docker/config.yaml", "**/__pycache__", "*.db"]
    assert dockerignore_excludes(patterns, "deploy/kubernetes/x.yaml")
    assert not dockerignore_excludes(patterns, "deploy/docker/config.yaml")
    assert dockerignore_excludes(patterns, "a/b/__pycache__/c.pyc")
    assert dockerignore_excludes(patterns, "x.db")
    assert not dockerignore_excludes(patterns, "supervisor/cli.py")


def test_image_default_config_is_valid_and_safe() -> None:
    data = image_config()
    assert data["mode"] == "dry-run", "the image's built-in config must never stop anything"
    if importlib.util.find_spec("supervisor.config") is None:
        pytest.skip("supervisor.config (load_settings) is not on this branch yet; the merge enables this")
    config = importlib.import_module("supervisor.config")
    settings = config.load_settings(IMAGE_CONFIG, environ={})
    assert settings.http.port == 9464
    assert str(settings.journal.path).startswith(STATE_DIR + "/")


def test_the_image_installs_the_pinned_versions(stages: list[Stage]) -> None:
    builder = stages[0]
    copies = [ins.args.split() for ins in builder.all("COPY")]
    assert any("constraints.txt" in args for args in copies)
    (install,) = [ins.args for ins in builder.all("RUN") if "pip install" in ins.args]
    assert "pip install --constraint constraints.txt /wheels/*.whl" in " ".join(install.split())
