"""The OpenAPI document is the contract: Schemathesis, with every one of its checks, holds the
real server to it — every operation, the management ones with the token, the model routes with
the served model's name as often as random ones. A bounded run here; docs/reliability.md has
the command for a longer one."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from server_harness import TOKEN, Server

pytest.importorskip("schemathesis")  # the dev extra
MODEL = "ranker"
EXAMPLES_PER_OPERATION = 15

# Model routes get the served model's name 70% of the time (else random names: 404s). The infer
# routes' exception: an OIP body valid by the document can still not fit the model (`data` must
# hold prod(`shape`) values of the model's own inputs, which JSON Schema cannot say), so a
# schema-valid infer body may be answered 400 with the reason.
CONFIG = f"""
[dictionaries.models]
values = ["{MODEL}"]

[[operations]]
include-path-regex = "^/v2/models/"

[operations.parameters]
"path.name" = {{ dictionary = "models", probability = 0.7 }}

[[operations]]
include-path-regex = "/infer$"

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "404", "413", "429", "503"]
"""


def schemathesis_run(server: Server, config: Path, examples: int, seed: int) -> tuple[int, str]:
    """`st run` with every check; run in the config's folder, where it keeps its cache."""
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--no-color",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=config.parent
    )
    return done.returncode, done.stdout + done.stderr


def test_schemathesis_finds_nothing_the_document_does_not_promise(
    server_factory: Callable[..., Server], served_artifact: Path, tmp_path: Path
) -> None:
    server = server_factory(
        [f"{MODEL}={served_artifact}"],
        {"server": {"management": True}, "slo": {"p99_ms": 2000}},
        env={"RECACCEL_TOKEN": TOKEN},
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    code, output = schemathesis_run(server, config, EXAMPLES_PER_OPERATION, seed=20261204)
    assert code == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated is not None, output[-3000:]
    assert int(generated[1]) == int(generated[2]) >= 300, generated[0]  # every operation ran
    assert server.get("/v2/health/ready")[0] == 200  # alive and still serving its model
    assert server.post("/v1/rank", {"user_id": 3, "k": 2})[0] == 200


def test_management_needs_the_token_itself(
    server_factory: Callable[..., Server], served_artifact: Path
) -> None:
    """No token, a wrong one, the right one with a byte more or under another scheme: 401, and
    nothing unloaded. The scheme's case is free (RFC 7235): "bearer" unloads."""
    server = server_factory(
        [f"{MODEL}={served_artifact}", f"other={served_artifact}"],
        {"server": {"management": True}},
        env={"RECACCEL_TOKEN": TOKEN},
    )
    unload = "/v2/repository/models/other/unload"
    wrong = ("Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"bearer  {TOKEN}", f"Basic {TOKEN}")
    for given in (None, *wrong):
        headers = {} if given is None else {"Authorization": given}
        assert server.post(unload, {}, headers)[0] == 401, given
    assert server.get("/v2/models/other/ready")[0] == 200  # still served
    assert server.post(unload, {}, {"Authorization": f"bearer {TOKEN}"})[0] == 200
