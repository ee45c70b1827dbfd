"""Reading LoadGen's verdict: from crafted detail logs, and from the logs a real (in-process,
instant) LoadGen run writes, so a change in LoadGen's format shows here first."""

from __future__ import annotations

from pathlib import Path

import mlperf_loadgen as lg
import orjson
import pytest

from recaccel.bench.loadgen import _log_settings, offline_settings, server_settings
from recaccel.bench.loadgen_log import (
    SUMMARY_LOG,
    LoadGenLogError,
    parse_detail_log,
    read_result,
)
from recaccel.errors import ConfigError


def mllog(key: str, value: object, is_error: bool = False) -> str:
    event = {"key": key, "value": value, "metadata": {"is_error": is_error}}
    return ":::MLLOG " + orjson.dumps(event).decode()


def detail(**overrides: object) -> str:
    events: dict[str, object] = {
        "effective_scenario": "Server",
        "result_validity": "VALID",
        "result_perf_constraints_met": True,
        "result_min_duration_met": True,
        "result_min_queries_met": True,
        "early_stopping_met": True,
        "result_invalid_reason": "",
        "early_stopping_result": " * Run successful.",
        "result_query_count": 1200,
        "result_overlatency_query_count": 3,
        "result_scheduled_samples_per_sec": 120.25,
        "result_completed_samples_per_sec": 119.5,
        "result_min_latency_ns": 1_000_000,
        "result_max_latency_ns": 90_000_000,
        "result_mean_latency_ns": 8_000_000,
        "result_50.00_percentile_latency_ns": 6_000_000,
        "result_99.00_percentile_latency_ns": 42_500_000,
        "result_99.90_percentile_latency_ns": 70_000_000,
    }
    events.update(overrides)
    return "\n".join(["noise before", *(mllog(k, v) for k, v in events.items())])


def test_a_valid_server_run() -> None:
    result = parse_detail_log(detail())
    assert result.valid and result.reasons == ()
    assert result.scenario == "Server"
    assert result.scheduled_qps == 120.25 and result.completed_qps == 119.5
    assert result.query_count == 1200 and result.overlatency_count == 3
    assert result.latency.ms("99.00") == 42.5 and result.latency.ms("50.00") == 6.0
    assert result.latency.max == 90_000_000
    assert result.early_stopping == "* Run successful."


def test_an_invalid_run_says_why() -> None:
    text = detail(
        result_validity="INVALID",
        result_perf_constraints_met=False,
        early_stopping_met=False,
        result_invalid_reason="Reduce target QPS to improve latency. ",
    )
    result = parse_detail_log(text)
    assert not result.valid
    assert result.reasons == (
        "latency constraint not met",
        "early stopping not satisfied",
        "Reduce target QPS to improve latency.",
    )


def test_offline_throughput_and_logged_errors() -> None:
    text = detail(effective_scenario="Offline", result_samples_per_second=5000.0)
    text = text.replace(mllog("result_completed_samples_per_sec", 119.5), "")
    text += "\n" + mllog("error_runtime", "SUT reported twice", is_error=True)
    text += "\n:::MLLOG {cut sho"  # a line a killed run left half-written
    result = parse_detail_log(text)
    assert result.completed_qps == 5000.0
    assert result.errors == ("error_runtime: SUT reported twice",)


def test_a_log_without_a_result_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(LoadGenLogError, match="did not finish"):
        parse_detail_log(mllog("loadgen_version", "6"))
    with pytest.raises(LoadGenLogError, match="wrote no"):
        read_result(tmp_path)


def run_instant(settings: lg.TestSettings, out_dir: Path) -> None:
    """LoadGen against a SUT that answers every sample at once, in LoadGen's thread."""

    def issue(samples: list[lg.QuerySample]) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(64, 64, lambda _: None, lambda _: None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lg.StartTestWithLogSettings(
            sut, qsl, settings, _log_settings(out_dir), str(out_dir / "audit.config")
        )
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)


def test_the_logs_a_real_short_server_run_writes(tmp_path: Path) -> None:
    # 100 queries: too few for early stopping on a p99, so INVALID for that reason alone.
    run_instant(server_settings(1000, 50, duration_s=0.1, min_query_count=100), tmp_path)
    result = read_result(tmp_path)
    assert result.scenario == "Server"
    assert not result.valid
    assert "early stopping not satisfied" in result.reasons
    assert result.query_count >= 100
    assert result.latency.ms("99.00") > 0 and result.scheduled_qps is not None
    assert "Result is : INVALID" in (tmp_path / SUMMARY_LOG).read_text()


def test_the_logs_a_real_offline_run_writes(tmp_path: Path) -> None:
    run_instant(offline_settings(1000, duration_s=0.05, min_query_count=10), tmp_path)
    result = read_result(tmp_path)
    assert result.scenario == "Offline" and result.completed_qps > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: server_settings(0, 50, 1, 10),
        lambda: server_settings(10, float("nan"), 1, 10),
        lambda: server_settings(10, 50, 0, 10),
        lambda: server_settings(10, 50, 1, 0),
        lambda: offline_settings(-1, 1, 10),
    ],
)
def test_settings_refuse_what_loadgen_cannot_run(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
