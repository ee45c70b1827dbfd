"""`recaccel bench`'s report: markdown for people, JSON for machines, PNG plots.

    write_report(result, Path("results/bench"))  # report.md, report.json, *.png

Rendered from a `BenchResult` alone (no server, no files read), so a canned result tests it.
The method is not restated here: the report links to docs/benchmark.md, and lists this run's
settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import recaccel
from recaccel.bench.plots import PLOT_FILES, write_plots
from recaccel.bench.results import Bar, BenchResult, ConfigResult, RunSummary
from recaccel.paths import write_text

MARKDOWN_FILE = "report.md"
JSON_FILE = "report.json"
# The method, once: in a checkout, beside src/ (an installed wheel has no docs/).
METHOD_PAGE = Path(recaccel.__file__).resolve().parents[2] / "docs" / "benchmark.md"
DEFAULT_METHOD_LINK = "../../docs/benchmark.md"  # from the default --out, results/bench


def method_link(out: Path, page: Path = METHOD_PAGE) -> str:
    """The link from a report written to `out` to the method's page, or "" without a checkout."""
    return Path(os.path.relpath(page.resolve(), out.resolve())).as_posix() if page.exists() else ""


def _method(result: BenchResult, link: str) -> list[str]:
    page = f"[docs/benchmark.md]({link})" if link else "docs/benchmark.md in recaccel's repository"
    settings = [[f"`{key}`", str(value)] for key, value in result.settings.items()]
    return [
        "## Method",
        "",
        "How the bench measures (the configurations, interleaving, the max-QPS search and its "
        f"rule for refusals, Offline, served AUC, CPU cost): {page}. This run's settings:",
        "",
        _table(["setting", "value"], settings),
    ]


def _num(value: float | None, spec: str = ".1f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}×"


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[value]


def _bar_row(bar: Bar, result: BenchResult) -> list[str]:
    head = result.headline
    if bar.claim.startswith("p99"):
        measured = (
            f"{_percent(bar.value)} ({_num(head.recaccel_p99_ms, '.2f')} ms "
            f"{head.recaccel_verdict or ''} vs {_num(head.baseline_p99_ms, '.2f')} ms "
            f"{head.baseline_verdict or ''})"
        )
        bars = (f"≤ {bar.paper:.0%}", f"≤ {bar.aim:.0%}")
    elif bar.claim.startswith("highest QPS"):
        base = head.baseline_max_qps
        base_text = (
            f"{base:.1f} QPS"
            if base is not None
            else f"none within the SLO; Offline {_num(head.baseline_offline_qps)} QPS"
        )
        measured = f"{_times(bar.value)} ({_num(head.recaccel_max_qps)} QPS vs {base_text})"
        bars = (f"≥ {bar.paper:g}×", f"≥ {bar.aim:g}×")
    else:
        measured = "—" if bar.value is None else f"{bar.value:+.3%}"
        bars = (f"≥ {bar.paper:+.1%}", f"≥ {bar.aim:+.1%}")
    return [bar.claim, measured, bars[0], _met(bar.meets_paper), bars[1], _met(bar.meets_aim)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join(align)}|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def _auc_change(config: ConfigResult) -> str:
    change = config.auc_change
    if change is None:
        return "—"
    return f"{change.relative:+.3%} ({change.delta:+.4f} [{change.low:+.4f}, {change.high:+.4f}])"


def _shed(run: RunSummary | None) -> str:
    """Rejected / failed, the refusals' reasons named: "5 (deadline 3, queue_full 2) / 0"."""
    return "—" if run is None else f"{run.rejected_with_reasons} / {run.failed}"


def configs_table(result: BenchResult) -> str:
    """One row per configuration: the figures the README shows."""
    header = [
        "configuration", "model", "runtime", "served test AUC", "ΔAUC vs baseline [95% CI]",
        "max QPS within SLO", "Offline QPS", f"p50 / p99 ms @ {result.reference_qps:.4g} QPS",
        "LoadGen there", "rejected / failed", "server CPU-s / 1k req",
    ]  # fmt: skip
    rows = []
    for c in result.configs:
        ref = c.at_reference
        rows.append(
            [
                f"**{c.name}**",
                c.model,
                c.runtime,
                _num(c.served_auc, ".4f"),
                _auc_change(c) if c.name != "baseline" else "(reference)",
                _num(c.max_qps, ".1f", "none"),
                _num(None if c.offline is None else c.offline.ok_qps),
                "—" if ref is None else f"{ref.p50_ms:.2f} / {ref.p99_ms:.2f}",
                "—" if ref is None else ref.verdict,
                _shed(ref),
                _num(None if ref is None else ref.server_cpu_s_per_1k, ".2f"),
            ]
        )
    return _table(header, rows, right_from=3)


def _runs_table(config: ConfigResult) -> str:
    header = [
        "target QPS", "completed QPS", "p50 ms", "p99 ms", "p99.9 ms", "LoadGen",
        "within bound", "rejected / failed", "server CPU-s / 1k", "why not",
    ]  # fmt: skip
    rows = [
        [
            f"{r.target_qps:.1f}",
            f"{r.completed_qps:.1f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.p999_ms:.2f}",
            r.verdict,
            "yes" if r.meets_bound else "no",
            _shed(r),
            _num(r.server_cpu_s_per_1k, ".2f"),
            "; ".join((*r.reasons, *r.misses)),
        ]
        for r in config.search
    ]
    return _table(header, rows, right_from=0)


def render_markdown(result: BenchResult, method_link: str = DEFAULT_METHOD_LINK) -> str:
    head = result.headline
    machine = result.machine
    workload = result.workload
    recaccel = result.config("recaccel")
    best = recaccel.best_run
    lines = [
        "# recaccel bench: baseline vs recaccel, interleaved on one machine",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, GPUs: "
        f"{', '.join(machine.get('gpus', [])) or 'none'}; started {result.started_at}, "
        f"took {result.wall_s:.0f} s.",
        "",
        f"Command: `{result.command}`",
        "",
        f"SLO: p99 ≤ {result.slo_ms:g} ms per rank request, the same for every configuration "
        "(MLPerf LoadGen, Server scenario: Poisson arrivals at a target QPS). Requests: "
        f"{workload.get('n_samples', 0):,} prebuilt `/v1/rank` bodies, candidates per request "
        f"lognormal (target median {workload.get('target_median', 0):g}, p99 "
        f"{workload.get('target_p99', 0):g}; sent: median {workload.get('median', 0):g}, p99 "
        f"{workload.get('p99', 0):g}, max {workload.get('max', 0)}). Profile: {result.profile}.",
        "",
        "## Headline",
        "",
        _table(
            ["claim", "measured", "seed paper's bar", "met", "our aim", "met"],
            [_bar_row(bar, result) for bar in head.bars],
        ),
        "",
        f"Reference load: {result.reference_qps:.4g} QPS, {result.reference_basis}. "
        f"LoadGen's verdicts: recaccel at the reference load {head.recaccel_verdict or '—'}, "
        f"at its highest QPS within the SLO {'VALID' if best is not None else '— (none)'}; "
        f"the baseline at the reference load {head.baseline_verdict or '—'}.",
        "",
        "## Configurations",
        "",
        configs_table(result),
        "",
        "Served test AUC: computed from the scores each server returned for the whole test "
        f"split ({result.test_rows:,} rows); ΔAUC: minus the baseline's, paired bootstrap on "
        "the same rows. Recorded test AUC of each artifact (its manifest): "
        + "; ".join(f"{c.name} {_num(c.artifact_test_auc, '.4f')}" for c in result.configs)
        + ".",
        "",
    ]
    for c in result.configs:
        lines += [f"- **{c.name}**: {c.description}; `{c.artifact}`.", f"  `{c.command}`"]
    lines += ["", "## Max-QPS search: every Server run, in order", ""]
    for c in result.configs:
        lines += [
            f"### {c.name} (stopped: {c.search_stopped})",
            "",
            _runs_table(c),
            "",
        ]
    lines += ["## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in PLOT_FILES.items()]
    lines += ["", *_method(result, method_link)]
    return "\n".join(lines) + "\n"


def relative_to(result: BenchResult, root: Path) -> BenchResult:
    """`result` with every artifact path under `root` (where the bench ran) written relative to
    it, in the artifacts and in the servers' commands: a committed report then names files of
    the checkout, not where one machine held it."""
    prefix = f"{root.resolve()}{os.sep}"

    def shown(text: str) -> str:
        return text.replace(prefix, "")

    configs = tuple(
        dataclasses.replace(c, artifact=shown(c.artifact), command=shown(c.command))
        for c in result.configs
    )
    return dataclasses.replace(result, configs=configs)


def write_report(result: BenchResult, out: Path) -> list[Path]:
    """report.md, report.json and the plots into `out`, paths relative to the working
    directory where they are under it (`relative_to`); returns the paths written."""
    result = relative_to(result, Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / MARKDOWN_FILE
    write_text(markdown, render_markdown(result, method_link(out)))
    data = out / JSON_FILE
    write_text(data, json.dumps(result.to_dict(), indent=2) + "\n")
    return [markdown, data, *write_plots(result, out)]
