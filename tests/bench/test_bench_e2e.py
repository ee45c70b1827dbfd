"""LoadGen's Server scenario against the real server on loopback (tests/e2e's harness): the
whole path works and the books balance. A correctness test at a low, easy load — how fast the
server is belongs to `recaccel bench`, never to an assertion here."""

from __future__ import annotations

from pathlib import Path

from server_harness import assert_drained, start_server

from recaccel.bench.loadgen import run_server_scenario
from recaccel.bench.workload import RankWorkload
from recaccel.data.dataset import Dataset

MODEL = "ranker"


def test_server_scenario_end_to_end(
    bench_artifact: Path, tiny_dataset: Dataset, tmp_path: Path
) -> None:
    sections = {
        # PyTorch eager starts in half the time of ONNX Runtime (no export); one worker.
        "workers": {"min": 1, "max": 1, "executors": [{"backend": "torch-eager"}]},
        # A bound no request at 50 QPS nears, so admission control refuses none.
        "slo": {"p99_ms": 5000, "max_queue_delay_ms": 5},
        "server": {"drain_grace_s": 0},
    }
    server = start_server(tmp_path, [f"{MODEL}={bench_artifact}"], sections)
    try:
        # The tiny catalogue has 60 items: median 20, p99 50 keeps the sizes below the cap.
        workload = RankWorkload.from_dataset(tiny_dataset, n_samples=200, seed=0, median=20, p99=50)
        result = run_server_scenario(
            server.url,
            workload,
            target_qps=50,
            latency_p99_ms=5000,
            duration_s=3,
            min_query_count=150,
            out_dir=tmp_path / "loadgen",
            server_pid=server.process.pid,
        )
    finally:
        assert_drained(server)

    loadgen, books = result.loadgen, result.sut.books
    # LoadGen ran and wrote a verdict (VALID or INVALID: early stopping may want more queries).
    assert loadgen.scenario == "Server"
    assert "Result is : " in (tmp_path / "loadgen" / "mlperf_log_summary.txt").read_text()
    assert loadgen.query_count >= 150
    assert loadgen.latency.ms("99.00") > 0 and loadgen.completed_qps > 0
    # Every query LoadGen issued was sent and completed exactly once, and each was answered.
    assert books.consistent and books.violations == ()
    assert books.issued == books.completed == loadgen.query_count
    assert books.ok == books.completed, (books.by_status, books.errors)
    assert books.server_latency.n == books.ok
    # Each answered ranking is a top-k of that sample's own candidates.
    assert result.rankings
    for index, ranked in result.rankings.items():
        assert set(ranked.item_ids.tolist()) <= set(workload.candidates[index].tolist())
        assert len(ranked.item_ids) == min(workload.k, workload.sizes[index])
    assert result.server_cpu_s is not None and result.server_cpu_s > 0
    assert result.to_dict()["sut"]["books"]["issued"] == books.issued
