"""Serving configuration: file, then environment, then flags; every bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from recaccel.errors import ConfigError
from recaccel.serve.config import ServeConfig, load_serve_config


def test_defaults_are_safe() -> None:
    config = load_serve_config(environ={})
    assert config == ServeConfig()
    assert config.server.host == "127.0.0.1" and not config.server.management
    assert config.token is None


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        "[slo]\np99_ms = 30\nmax_queue_delay_ms = 4\n"
        "[workers]\nmin = 1\nmax = 3\n"
        'executors = [{backend = "onnxruntime", precision = "int8-dynamic"}, '
        '{backend = "torch-eager", count = 1}]\n'
    )
    environ = {"RECACCEL_SLO_P99_MS": "40", "RECACCEL_WORKERS_MAX": "4", "RECACCEL_TOKEN": "t"}
    config = load_serve_config(path, {"workers": {"max": 5}}, environ)
    assert config.slo.p99_ms == 40 and config.slo.max_queue_delay_ms == 4
    assert config.workers.max == 5  # flags win
    assert [e.executor_config().label() for e in config.workers.executors] == [
        "onnxruntime/cpu/int8-dynamic/t1",
        "torch-eager/cpu/fp32/t1",
    ]
    assert config.workers.executors[1].count == 1
    assert config.token == "t" and config.to_dict()["token"] == "***"


def test_yaml_works_too(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("server:\n  port: 9001\nrank:\n  default_k: 20\n")
    config = load_serve_config(path, environ={})
    assert config.server.port == 9001 and config.rank.default_k == 20


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[slo]\np99_ms = -1\n", {}, "slo.p99_ms"),
        ("[slo]\np99 = 10\n", {}, "slo.p99"),
        ("[sloo]\np99_ms = 10\n", {}, "unknown section [sloo]"),
        ("[workers]\nmin = 3\nmax = 2\n", {}, "workers.max (2) must be >= workers.min (3)"),
        ("[plane]\nhang_timeout_s = 0\n", {}, "plane.hang_timeout_s: must be > 0"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[server]\nport = 'x'\n", {}, "server.port: expected int"),
        ("[server]\nmanagement = true\n", {}, "RECACCEL_TOKEN is not set"),
        ("", {"RECACCEL_BATCHING_MAX_ROWS": "many"}, "batching.max_rows"),
        ("[workers]\nexecutors = [{backend = 'tensorflow'}]\n", {}, "workers.executors[0]"),
        ("[workers]\nexecutors = [{precision = 'int3'}]\n", {}, "unknown precision"),
        ("[workers]\nexecutors = [{threads = 0}]\n", {}, "threads"),
        (
            "[workers]\nexecutors = [{backend = 'openvino', reuse = true}]\n",
            {},
            "workers.executors[0].reuse: openvino does not run reuse",
        ),
        ("[part_cache]\nttl_s = 60\n", {}, "workers.executors[0] runs without reuse"),
        (
            "[workers]\nexecutors = [{backend = 'torch-aot', reuse = true}]\n",
            {"RECACCEL_PART_CACHE_TTL_S": "60"},
            "runs torch-aot, which runs the split twin as one graph",
        ),
        ("[part_cache]\nttl_s = -1\n", {}, "part_cache.ttl_s must be >= 0"),
        ("[part_cache]\nmax_entries = 0\n", {}, "part_cache.max_entries >= 1"),
        ("token = 'abc'\n", {}, "RECACCEL_TOKEN only"),
        ("[slo\n", {}, "not valid TOML"),
        ("[admission]\noverload_target_ms = -5\n", {}, "admission.overload_target_ms"),
    ],
)
def test_a_bad_setting_is_named(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_serve_config(path, environ=environ)
    assert message in str(error.value)


def test_the_part_cache_is_off_unless_given_a_ttl_and_on_with_one(tmp_path: Path) -> None:
    assert load_serve_config(environ={}).part_cache.settings() is None
    path = tmp_path / "serve.toml"
    path.write_text("[workers]\nexecutors = [{backend = 'torch-eager', reuse = true}]\n")
    config = load_serve_config(path, environ={"RECACCEL_PART_CACHE_TTL_S": "30"})
    settings = config.part_cache.settings()
    assert settings is not None and (settings.ttl_s, settings.max_entries) == (30, 100_000)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the serving config"):
        load_serve_config(tmp_path / "absent.toml", environ={})


def test_rank_tables_go_together() -> None:
    with pytest.raises(ConfigError, match=r"rank\.users and rank\.items go together"):
        load_serve_config(None, {"rank": {"users": "users.parquet"}})
    both = load_serve_config(None, {"rank": {"users": "u.parquet", "items": "i.parquet"}})
    assert (both.rank.users, both.rank.items) == ("u.parquet", "i.parquet")
