"""Startup checks: each problem is one line naming the thing and the fix."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import AwsSettings, Settings, parse_settings
from supervisor.startup import (
    StartupError,
    check_bind,
    check_profile,
    check_region,
    check_startup,
    known_regions,
    startup_problems,
)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    config: dict[str, Any] = {"journal": {"path": str(tmp_path / "journal.db")}, "http": {"port": 0}}
    config.update(overrides)
    return parse_settings(config, environ={})


def one_line(error: pytest.ExceptionInfo[StartupError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --- region ------------------------------------------------------------------------------------------


def test_botocore_knows_the_regions_of_every_partition() -> None:
    assert {"us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"} <= known_regions()


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1", "us-gov-east-1"])
def test_real_regions_pass(region: str) -> None:
    check_region(AwsSettings(region=region), environ={})


@pytest.mark.parametrize(
    ("region", "suggestion"),
    [("us-east1", "'us-east-1'"), ("eu-wset-1", "'eu-west-1'"), ("US-EAST-1", "'us-east-1'"),
     ("us east 1", "'us-east-1'"), ("mars-1", None)],
)
def test_a_misspelled_region_is_refused_with_a_suggestion(region: str, suggestion: str | None) -> None:
    with pytest.raises(StartupError) as caught:
        check_region(AwsSettings(region=region), environ={})
    text = one_line(caught)
    assert text.startswith(f"aws.region {region!r}: not an AWS region with Athena (botocore ")
    assert (f"did you mean {suggestion}?" in text) if suggestion else "did you mean" not in text
    assert "set aws.region to a region such as us-east-1" in text


def test_the_region_variable_is_named_when_it_set_the_region() -> None:
    aws = parse_settings({}, environ={"ATHENA_SUPERVISOR_AWS_REGION": "eu-west-9"}).aws
    with pytest.raises(StartupError) as caught:
        check_region(aws, environ={"ATHENA_SUPERVISOR_AWS_REGION": "eu-west-9"})
    assert one_line(caught).startswith("ATHENA_SUPERVISOR_AWS_REGION 'eu-west-9': not an AWS region")


def test_with_a_custom_endpoint_any_region_shaped_name_passes() -> None:
    check_region(AwsSettings(region="xx-test-1", endpoint_url="http://127.0.0.1:4566"), environ={})
    check_region(AwsSettings(region="eu-west-1", endpoint_url="http://127.0.0.1:4566"), environ={})
    with pytest.raises(StartupError) as caught:
        check_region(AwsSettings(region="local", endpoint_url="http://127.0.0.1:4566"), environ={})
    assert one_line(caught).startswith("aws.region 'local': not a region name (with aws.endpoint_url set, any "
                                       "name like xx-name-1 is accepted)")


# --- profile -----------------------------------------------------------------------------------------


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text("[default]\nregion = us-east-1\n[profile ops]\nregion = eu-west-1\n")
    credentials.write_text("[batch]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret-value\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    yield config, credentials


@pytest.mark.parametrize("profile", ["ops", "batch", "default"])
def test_profiles_in_either_file_pass(aws_files: tuple[Path, Path], profile: str) -> None:
    check_profile(AwsSettings(profile=profile), environ={})


def test_an_unknown_profile_is_refused_listing_the_files_and_profiles(aws_files: tuple[Path, Path]) -> None:
    config, credentials = aws_files
    with pytest.raises(StartupError) as caught:
        check_profile(AwsSettings(profile="opz"), environ={})
    text = one_line(caught)
    assert text == (f"aws.profile 'opz': no such profile in {config} or {credentials} (profiles there: batch, "
                    "default, ops); did you mean 'ops'? add the profile, or remove it to use the default "
                    "credential chain")
    assert "secret-value" not in text and "AKIA" not in text


def test_the_profile_variables_are_named(aws_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    aws = parse_settings({}, environ={"ATHENA_SUPERVISOR_AWS_PROFILE": "nope"}).aws
    with pytest.raises(StartupError) as caught:
        check_profile(aws, environ={"ATHENA_SUPERVISOR_AWS_PROFILE": "nope"})
    assert one_line(caught).startswith("ATHENA_SUPERVISOR_AWS_PROFILE 'nope': no such profile in ")
    with pytest.raises(StartupError) as caught:
        check_profile(AwsSettings(), environ={"AWS_PROFILE": "gone"})
    assert one_line(caught).startswith("AWS_PROFILE 'gone': no such profile in ")
    assert one_line(caught).endswith("add the profile, or unset it to use the default credential chain")


def test_no_profile_named_is_nothing_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    check_profile(AwsSettings(), environ={})


# --- listening address -------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_free_address_passes_and_port_zero_only_checks_the_host() -> None:
    check_bind("127.0.0.1", 0)
    check_bind("localhost", 0)


def test_a_port_in_use_is_refused(busy_port: int) -> None:
    with pytest.raises(StartupError) as caught:
        check_bind("127.0.0.1", busy_port)
    assert one_line(caught) == (
        f"http.port {busy_port}: 127.0.0.1:{busy_port} is already in use (Address already in use); stop the "
        "process listening there, or set http.port to a free port (0 picks one)")


def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(StartupError) as caught:
        check_bind("no-such-host.invalid", 9464, host_setting="--host", port_setting="--port")
    assert one_line(caught).startswith("--host 'no-such-host.invalid': cannot resolve (")
    assert one_line(caught).endswith("set --host to an address of this machine, e.g. 127.0.0.1 (this machine "
                                     "only) or 0.0.0.0 (every interface)")


def test_an_address_of_another_machine_is_refused() -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("192.0.2.1", 0))
        except OSError:
            pass
        else:
            pytest.skip("this machine binds non-local addresses (net.ipv4.ip_nonlocal_bind)")
    with pytest.raises(StartupError) as caught:
        check_bind("192.0.2.1", 0)  # TEST-NET-1: never assigned to this machine
    assert one_line(caught).startswith("http.host '192.0.2.1': 192.0.2.1 is not an address of this machine (")


# --- everything at once ------------------------------------------------------------------------------


def test_a_sound_setup_passes(tmp_path: Path) -> None:
    check_startup(settings(tmp_path), environ={})
    assert startup_problems(settings(tmp_path, journal={"path": ":memory:"}), environ={}) == []


def test_every_problem_is_listed_in_order_and_the_first_is_raised(tmp_path: Path, busy_port: int) -> None:
    broken = settings(tmp_path, aws={"region": "eu-wset-1"}, journal={"path": str(tmp_path / "no" / "j.db")},
                      http={"host": "127.0.0.1", "port": busy_port})
    problems = [str(problem) for problem in startup_problems(broken, environ={})]
    assert [text.split(" ", 1)[0] for text in problems] == ["aws.region", "journal", "http.port"]
    with pytest.raises(StartupError, match=r"^aws\.region 'eu-wset-1'"):
        check_startup(broken, environ={})
