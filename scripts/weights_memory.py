"""Memory of one artifact served by 1, 2, 4 ... processes: is there one copy of its weights?

For each process count it starts `recaccel serve ARTIFACT --processes N` (the fronts accept on
one socket; in-process executors), waits until ready, sends the same scoring requests (OIP
infer, 1,000 random valid rows each, on new connections that the fronts share), then sums the
proportional set size (PSS, from /proc/PID/smaps_rollup) over the server's whole process
tree. PSS splits each shared page among the processes that map it, so N processes holding one
shared copy sum to about one copy plus N times each process's own memory; N private copies sum
to N copies.

    .venv/bin/python scripts/weights_memory.py artifacts/criteo-dlrm-heavy-random \
        --processes 1,2,4 --backend onnxruntime

Prints, per process count: total PSS, its ratio to one process's, RSS summed (what counting
each process alone says) and anonymous (private) memory summed; first, the weights file's size.
docs/weights-in-memory.md has the figures.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from recaccel.artifact import WEIGHTS_FILE, read_manifest
from recaccel.bench.accuracy import HEADER_LENGTH, infer_body
from recaccel.data.dataset import example_batch
from recaccel.data.schema import FeatureSchema

READY_TIMEOUT_S = 600.0
ROWS_PER_REQUEST = 1000
SETTLE_S = 3.0  # after the last answer: let lazily freed memory go before reading PSS


def children_of(pid: int) -> list[int]:
    """Every descendant of `pid` (fronts, their workers), from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """Pss, Rss, Anonymous (KiB) of one process from /proc/PID/smaps_rollup."""
    wanted = ("Pss", "Rss", "Anonymous")
    out = dict.fromkeys(wanted, 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in wanted:
                out[key] = int(line.split()[1])
    except OSError:
        pass  # exited meanwhile
    return out


def weights_pss_kib(pid: int, under: Path) -> int:
    """PSS (KiB) of the process's mappings of files under `under` (the artifact: its weights
    and its cached ONNX forms), from /proc/PID/smaps."""
    prefix, total, inside = str(under.resolve()), 0, False
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            fields = line.split(None, 5)
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                inside = len(fields) == 6 and fields[5].startswith(prefix)
            elif inside and line.startswith("Pss:"):
                total += int(fields[1])
    except OSError:
        pass  # exited meanwhile
    return total


def wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server was not ready in time")


def bodies(schema: FeatureSchema, count: int) -> Iterator[tuple[bytes, int]]:
    inputs = [
        {"name": "dense", "datatype": "FP32"},
        {"name": "categorical", "datatype": "INT64"},
        {"name": "multi_hot", "datatype": "INT64"},
    ]
    for seed in range(count):
        yield infer_body(example_batch(schema, ROWS_PER_REQUEST, seed=seed), inputs, str(seed))


def score(port: int, model: str, schema: FeatureSchema, requests: int) -> None:
    """`requests` scoring requests, each on a new connection so the kernel spreads them over
    the fronts accepting on the socket. The same requests for every process count: the
    weights' pages they touch are then the same, however many processes share them."""
    for body, length in bodies(schema, requests):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}
        connection.request("POST", f"/v2/models/{model}/infer", body, headers)
        answer = connection.getresponse()
        answer.read()
        connection.close()
        if answer.status != 200:
            raise SystemExit(f"the server answered {answer.status}")


def measure(args: argparse.Namespace, processes: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "recaccel.cli",
        "serve",
        f"m={args.artifact}",
        "--processes",
        str(processes),
        "--backend",
        args.backend,
        "--port",
        str(args.port),
        *args.serve_args.split(),
    ]
    log = open(Path(args.log_dir) / f"serve-{processes}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(args.port, server)
        schema = FeatureSchema.from_dict(read_manifest(Path(args.artifact)).schema)
        score(args.port, "m", schema, args.requests)
        time.sleep(SETTLE_S)
        tree = [server.pid, *children_of(server.pid)]
        each = [memory_kib(pid) for pid in tree]
        return {
            "pids": len(tree),
            "weights_mib": sum(weights_pss_kib(pid, Path(args.artifact)) for pid in tree) / 1024,
            "pss_mib": sum(m["Pss"] for m in each) / 1024,
            "rss_mib": sum(m["Rss"] for m in each) / 1024,
            "anon_mib": sum(m["Anonymous"] for m in each) / 1024,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--processes", default="1,2,4", help="comma list of front counts")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--port", type=int, default=8841)
    parser.add_argument("--requests", type=int, default=32, help="the same for every count")
    parser.add_argument("--serve-args", default="", help="more `recaccel serve` flags")
    parser.add_argument("--log-dir", default=".")
    args = parser.parse_args()
    weights = (Path(args.artifact) / WEIGHTS_FILE).stat().st_size / 2**20
    print(f"{args.artifact} ({args.backend}): {WEIGHTS_FILE} {weights:,.0f} MiB")
    print(
        "| processes | server processes | total PSS MiB | × one process | RSS summed MiB "
        "| anonymous MiB | of the PSS: the artifact's files MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first: float | None = None
    for count in (int(n) for n in args.processes.split(",")):
        got = measure(args, count)
        first = first or got["pss_mib"]
        print(
            f"| {count} | {got['pids']:.0f} | {got['pss_mib']:,.0f} | "
            f"{got['pss_mib'] / first:.2f} | {got['rss_mib']:,.0f} | {got['anon_mib']:,.0f} | "
            f"{got['weights_mib']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
