"""Pure helpers: durations, pragmas, paging tokens, request validation and the shape checker."""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

import pytest

from athena_spark_emulator import EmulatorThread, ManualClock
from athena_spark_emulator.errors import ApiError
from athena_spark_emulator.model import load_athena_model
from athena_spark_emulator.paging import NewestFirstIndex
from athena_spark_emulator.pragma import (
    CalculationPragma,
    PragmaError,
    SessionPragma,
    parse_calculation_pragma,
    parse_session_pragma,
)
from athena_spark_emulator.shapecheck import ShapeMismatch, check_output
from athena_spark_emulator.validation import validate_request


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("2m", 120.0), ("1.5s", 1.5), ("50ms", 0.05), ("1h", 3600.0), ("1d", 86400.0), ("12", 12.0),
    (3, 3.0),
    (0.25, 0.25),
])
def test_durations(text: Any, seconds: float) -> None:
    from athena_spark_emulator.durations import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "-1s", "s", True, None, float("inf")])
def test_bad_durations(bad: Any) -> None:
    from athena_spark_emulator.durations import parse_duration

    with pytest.raises(ValueError):
        parse_duration(bad)


def test_pragma_defaults_and_full_grammar() -> None:
    defaults = CalculationPragma(10.0, 2, 0.0, "completed", "honor", 1.0)
    assert parse_calculation_pragma("print('no pragma')") == defaults
    code = ("import x\n  #   sim: runtime=90s dpus=6 queue=0s\nrun()\n"
            "# sim: outcome=failed on_stop=ignore stop_latency=2s")
    assert parse_calculation_pragma(code) == CalculationPragma(90.0, 6, 0.0, "failed", "ignore", 2.0)
    assert parse_session_pragma("nightly\n# sim: start=1s on_terminate=stuck terminate_latency=3s") == \
        SessionPragma(1.0, "stuck", 3.0)
    assert parse_session_pragma(None) == SessionPragma()
    assert parse_session_pragma("# sim: created_for=forever degraded_after=30s fail_after=1m") == \
        SessionPragma(created_for=math.inf, degraded_after=30.0, fail_after=60.0)
    assert parse_session_pragma("# sim: created_for=5s").created_for == 5.0
    assert parse_calculation_pragma("x = '# sim: not at line start'") == CalculationPragma()


def test_pragma_error_names_key() -> None:
    with pytest.raises(PragmaError) as caught:
        parse_calculation_pragma("# sim: dpus=2 runtim=3s")
    assert caught.value.key == "runtim"


def test_newest_first_index_pages_and_tokens() -> None:
    index = NewestFirstIndex()
    for seq, stamp in enumerate([5.0, 1.0, 3.0, 3.0, 9.0]):
        index.add((stamp, seq), f"id{seq}")
    page, token = index.page(None, 2)
    assert page == ["id4", "id0"] and token
    page, token = index.page(token, 2)
    assert page == ["id3", "id2"] and token
    assert index.page(token, 2) == (["id1"], None)
    assert index.page(None, 10, keep=lambda item: item in ("id1", "id3")) == (["id3", "id1"], None)
    with pytest.raises(ApiError):
        index.page("not-a-token!", 2)


def test_validation_walks_nested_shapes() -> None:
    model = load_athena_model()
    start_session = model.operation_model("StartSession")
    validate_request(start_session, {"WorkGroup": "w", "EngineConfiguration": {
        "SparkProperties": {"spark.x": "1"}, "MaxConcurrentDpus": 2}})
    with pytest.raises(ApiError, match=re.escape("EngineConfiguration.SparkProperties.spark.x")):
        validate_request(start_session, {"WorkGroup": "w",
                                         "EngineConfiguration": {"SparkProperties": {"spark.x": 1}}})
    with pytest.raises(ApiError, match=re.escape("'Tags.1'")):
        validate_request(start_session, {"WorkGroup": "w", "EngineConfiguration": {}, "Tags": ["k"]})
    with pytest.raises(ApiError, match="type integer"):
        validate_request(start_session, {"WorkGroup": "w", "EngineConfiguration": {},
                                         "SessionIdleTimeoutInMinutes": True})


def test_shape_checker_rejects_what_botocore_does_not_describe() -> None:
    model = load_athena_model()
    get_status = model.operation_model("GetSessionStatus")
    now = datetime.datetime.now(datetime.UTC)
    check_output(get_status, {"SessionId": "s", "Status": {"State": "IDLE", "StartDateTime": now},
                              "ResponseMetadata": {}})
    with pytest.raises(ShapeMismatch, match="unknown member"):
        check_output(get_status, {"SessionId": "s", "Extra": 1})
    with pytest.raises(ShapeMismatch, match="not one of"):
        check_output(get_status, {"Status": {"State": "SLEEPING"}})
    with pytest.raises(ShapeMismatch, match="expected timestamp"):
        check_output(get_status, {"Status": {"StartDateTime": 1.5}})
    check_output(get_status, {"Status": {"StartDateTime": 1.5}}, wire=True)
    with pytest.raises(ShapeMismatch, match="missing required member EndpointUrl"):
        check_output(model.operation_model("GetSessionEndpoint"), {"AuthToken": "t"})
    with pytest.raises(ShapeMismatch, match="length"):
        check_output(get_status, {"SessionId": ""})


async def test_emulator_thread_serves_while_the_calling_loop_is_blocked() -> None:
    import boto3

    with EmulatorThread(clock=ManualClock(), workgroups=["w"]) as emu:
        assert emu.control_url == emu.endpoint_url + "/_emulator"
        athena = boto3.client("athena", endpoint_url=emu.endpoint_url, region_name="us-east-1",
                              aws_access_key_id="a", aws_secret_access_key="b")
        # a blocking call from inside this test's event loop: an in-loop server would deadlock here
        assert {g["Name"] for g in athena.list_work_groups()["WorkGroups"]} == {"primary", "w"}
    with pytest.raises(RuntimeError):
        _ = EmulatorThread().endpoint_url
