from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from supervisor.cli import build_parser, main
from supervisor.commands.check_config import check_config, shadowed_policies
from supervisor.config import parse_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"


def run(path: Path | str, *, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(str(path), as_json=as_json, out=out, err=err, environ={})
    return code, out.getvalue(), err.getvalue()


def test_subcommand_is_registered() -> None:
    assert "check-config" in build_parser().format_help()


def test_cli_exit_codes_and_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Through the CLI's main(), in this process: a real process's exit status and streams are checked by the
    # `run` and `demo` process tests (tests/test_daemon_process.py, tests/test_demo.py) and test_cli.py.
    assert main(["check-config", str(EXAMPLE)]) == 0
    ok = capsys.readouterr()
    assert "1. etl-limits" in ok.out and ok.err == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - name: p\n    calcualtion: {max_runtime: 30m}\n", encoding="utf-8")
    assert main(["check-config", str(bad)]) == 2
    failed = capsys.readouterr()
    assert failed.out == ""
    assert failed.err.splitlines() == [
        f"{bad}: policies[0].calcualtion: unknown key; accepted keys: accounts, action, calculation, engines, mode, "
        "name, notify_before, regions, session, workgroups; did you mean 'calculation'?",
    ]


def test_summary_lists_policies_in_evaluation_order() -> None:
    code, out, err = run(EXAMPLE)
    assert (code, err) == (0, "")
    assert "the first whose workgroups match a target's workgroup wins" in out
    assert out.index("1. etl-limits") < out.index("2. everything-else")
    assert "each calculation: max runtime 30m, max queued 5m, max 4 DPU-hours, max cost 1.50 USD" in out
    assert ("each session: max idle 15m, max age 8h, max busy 2h without a break, max 40 DPU-hours, "
            "max cost 15.00 USD") in out
    assert "mode: dry-run (set on the policy)" in out
    assert "etl-daily: 200.00 USD per calendar day in time zone UTC" in out
    assert "at 110% (220.00 USD): terminate_sessions" in out


def test_summary_and_json_never_show_secrets() -> None:
    for as_json in (False, True):
        code, out, _ = run(EXAMPLE, as_json=as_json)
        assert code == 0
        assert "T000" not in out and "change-me" not in out
        assert "https://hooks.example.com/***" in out


def test_json_is_the_effective_config_with_formatted_durations() -> None:
    code, out, _ = run(EXAMPLE, as_json=True)
    data = json.loads(out)
    assert code == 0
    assert data["policies"][0]["calculation"]["max_runtime"] == "30m"
    assert data["escalation"]["terminate_grace"] == "2m"
    assert data["notifications"][0]["headers"] == {"Authorization": "***"}
    assert data["journal"]["path"] == str(REPO / "config" / "athena-supervisor.db")


def test_invalid_file_exit_code_and_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: enforcing\nhttp: {port: 99999}\n", encoding="utf-8")
    code, out, err = run(bad)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{bad}: mode: not an accepted value; got 'enforcing'; accepted values: enforce, dry-run; "
        "did you mean 'enforce'?",
        f"{bad}: http.port: out of range; got 99999; must be at most 65535",
    ]
    assert run(tmp_path / "missing.yaml")[0] == 2


@pytest.mark.parametrize(
    ("globs", "shadowed"),
    [
        ([["*"], ["etl-*"]], [(2, "p1")]),
        ([["etl-*"], ["etl-nightly*", "adhoc"]], []),
        ([["etl-*", "adhoc"], ["etl-nightly*", "adhoc"]], [(2, "p1")]),
        ([["etl-nightly*"], ["etl-*"]], []),
        ([["etl-?"], ["etl-*"]], []),
    ],
)
def test_shadowed_policies(globs: list[list[str]], shadowed: list[tuple[int, str]]) -> None:
    limit = {"max_idle": "1m"}
    policies = [{"name": f"p{i}", "workgroups": wgs, "session": limit} for i, wgs in enumerate(globs)]
    settings = parse_settings({"policies": policies}, environ={})
    assert shadowed_policies(settings) == shadowed


def test_summary_and_json_show_the_aws_timeouts_and_the_sts_endpoint_masked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("aws:\n  endpoint_url: http://127.0.0.1:4566\n  read_timeout: 30s\n"
                      "  sts_endpoint_url: https://user:pw@sts.example.com/path?token=abc\n", encoding="utf-8")
    code, out, _ = run(config)
    assert code == 0
    assert ("     timeouts per attempt: connect 2s, read 30s; STS endpoint https://***@sts.example.com/***"
            in out.splitlines())
    assert "endpoint http://127.0.0.1:4566," in out
    code, out, _ = run(config, as_json=True)
    aws = json.loads(out)["aws"]
    assert (aws["connect_timeout"], aws["read_timeout"]) == ("2s", "30s")
    assert aws["sts_endpoint_url"] == "https://***@sts.example.com/***"
    assert aws["endpoint_url"] == "http://127.0.0.1:4566"
    assert "token" not in out and "pw" not in out


def test_an_unknown_region_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("aws: {region: eu-wset-1}\n", encoding="utf-8")
    code, out, err = run(config)
    assert (code, out) == (2, "")
    assert err.startswith(f"{config}: aws.region 'eu-wset-1': not an AWS region with Athena")
    config.write_text("aws: {region: xx-local-1, endpoint_url: 'http://127.0.0.1:4566'}\n", encoding="utf-8")
    assert run(config)[0] == 0


def test_the_journal_line_names_the_backend_and_masks_the_dynamodb_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("aws: {region: eu-west-1}\njournal: {path: j.db, retention: 30d}\n", encoding="utf-8")
    code, out, _ = run(config)
    assert code == 0 and f"journal: {tmp_path / 'j.db'} (SQLite); events kept 30d" in out.splitlines()
    config.write_text("aws: {region: eu-west-1}\njournal: {backend: dynamodb, table: athena-supervisor, "
                      "endpoint_url: 'http://user:pw@dynamodb.local:8000/x'}\n", encoding="utf-8")
    code, out, _ = run(config)
    assert code == 0 and ("journal: DynamoDB table athena-supervisor in eu-west-1, endpoint "
                          "http://***@dynamodb.local:8000/***; events expire 90d after they happen (TTL)"
                          in out.splitlines())
    code, out, _ = run(config, as_json=True)
    journal = json.loads(out)["journal"]
    assert (journal["backend"], journal["table"], journal["retention"]) == ("dynamodb", "athena-supervisor", "90d")
    assert "pw" not in out


def test_the_file_may_be_given_with_config_as_every_other_command_takes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from supervisor.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("mode: dry-run\n", encoding="utf-8")
    assert main(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: valid")
    assert main(["check-config", str(config)]) == 0
    capsys.readouterr()
    for argv in (["check-config"], ["check-config", str(config), "--config", str(config)]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "check-config --config FILE" in capsys.readouterr().err


def test_threshold_amounts_keep_the_digits_that_matter(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("budgets:\n  - {name: b, period: daily, limit_usd: 0.05, thresholds: "
                      "[{at_percent: 50, action: notify}, {at_percent: 100, action: notify}]}\n", encoding="utf-8")
    code, out, _ = run(config)
    assert code == 0
    assert "at 50% (0.025 USD): notify" in out and "at 100% (0.05 USD): notify" in out
    assert "b: 0.05 USD per calendar day" in out


def test_values_from_outside_the_file_are_listed_with_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from supervisor.cli import main

    (tmp_path / "token").write_text("Bearer s3cret-token\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text("notifications:\n  - type: webhook\n    url: {env: HOOK_URL}\n"
                      "    headers: {Authorization: {file: token}}\n"
                      "policies:\n  - {name: p, session: {max_idle: 10m}}\n", encoding="utf-8")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/T0/B0/s3cret-path")
    monkeypatch.setenv("ATHENA_SUPERVISOR_HTTP_PORT", "9500")
    monkeypatch.setenv("ATHENA_SUPERVISOR_POLICIES_0_SESSION_MAX_IDLE", "5m")
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-5:] == [
        f"values from outside {config}:",
        "  http.port: 9500 (from environment variable ATHENA_SUPERVISOR_HTTP_PORT)",
        "  notifications[0].headers.Authorization: *** (from {file: token})",
        "  notifications[0].url: https://hooks.example.com/*** (from {env: HOOK_URL})",
        '  policies[0].session.max_idle: "5m" (from environment variable '
        'ATHENA_SUPERVISOR_POLICIES_0_SESSION_MAX_IDLE)',
    ]
    assert "s3cret" not in out and "each session: max idle 5m" in out
    monkeypatch.delenv("HOOK_URL")
    assert main(["check-config", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"{config}: notifications[0].url: environment variable HOOK_URL is not set; "
                                       "set HOOK_URL, or write the value in the file\n")
