"""The bench's three plots, drawn from a `BenchResult` alone.

- latency_cdf.png: each configuration's client latency distribution at the reference load;
- p99_vs_qps.png: each configuration's p99 against the target QPS of its search runs and its
  reference-load run (filled markers: within the bound), with the SLO as a line;
- ablation.png: highest QPS within the SLO, and p99 at the reference load, per configuration.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from recaccel.bench.results import CDF_PERCENTILES, BenchResult

PLOT_FILES = {
    "latency CDF at the reference load": "latency_cdf.png",
    "p99 vs QPS": "p99_vs_qps.png",
    "ablation": "ablation.png",
}
COLORS = {
    "baseline": "#7f7f7f",
    "model-only": "#1f77b4",
    "system-only": "#ff7f0e",
    "recaccel": "#2ca02c",
}
DPI = 110


def _color(name: str) -> str:
    return COLORS.get(name, "#9467bd")


def plot_cdf(result: BenchResult, path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for c in result.configs:
        if c.reference_cdf_ms:
            fractions = [p / 100 for p in CDF_PERCENTILES]
            ax.plot(c.reference_cdf_ms, fractions, label=c.name, color=_color(c.name))
    ax.axvline(result.slo_ms, color="red", linestyle="--", linewidth=1, label="SLO")
    ax.set_xscale("log")
    ax.set_xlabel("latency per rank request, ms (client-measured)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Latency at {result.reference_qps:.4g} QPS (Poisson)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=DPI)


def plot_p99_vs_qps(result: BenchResult, path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for c in result.configs:
        measured = [*c.search, *([c.at_reference] if c.at_reference else [])]
        runs = sorted(measured, key=lambda r: r.target_qps)
        if not runs:
            continue
        color = _color(c.name)
        qps, p99 = [r.target_qps for r in runs], [r.p99_ms for r in runs]
        ax.plot(qps, p99, color=color, alpha=0.6, label=c.name)
        for r in runs:
            face = color if r.meets_bound else "white"
            ax.plot(r.target_qps, r.p99_ms, "o", color=color, markerfacecolor=face)
    ax.axhline(result.slo_ms, color="red", linestyle="--", linewidth=1, label="SLO")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Offered load, not completed: an overloaded run completes fewer and would fold the curve.
    ax.set_xlabel("target QPS (Poisson arrivals)")
    ax.set_ylabel("p99 latency, ms (LoadGen)")
    ax.set_title("p99 vs load (filled: within the bound)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=DPI)


def plot_ablation(result: BenchResult, path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="constrained")
    names = [c.name for c in result.configs]
    colors = [_color(n) for n in names]
    left, right = fig.subplots(1, 2)
    qps = [c.max_qps or 0.0 for c in result.configs]
    left.bar(names, qps, color=colors)
    for i, c in enumerate(result.configs):
        label = "none" if c.max_qps is None else f"{c.max_qps:.0f}"
        left.annotate(label, (i, qps[i]), ha="center", va="bottom")
    left.set_ylabel("QPS")
    left.set_title(f"Highest QPS within p99 ≤ {result.slo_ms:g} ms")
    p99 = [c.at_reference.p99_ms if c.at_reference else 0.0 for c in result.configs]
    right.bar(names, p99, color=colors)
    base = p99[names.index("baseline")] if "baseline" in names else 0.0
    for i, value in enumerate(p99):
        label = f"{value:.1f} ms" + (f"\n{value / base:.0%}" if base > 0 else "")
        right.annotate(label, (i, value), ha="center", va="bottom")
    right.axhline(result.slo_ms, color="red", linestyle="--", linewidth=1)
    right.set_ylabel("p99 ms")
    right.set_title(f"p99 at {result.reference_qps:.4g} QPS (% of baseline)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=15)
        ax.margins(y=0.15)  # room for the labels above the bars
    fig.savefig(path, dpi=DPI)


def write_plots(result: BenchResult, out: Path) -> list[Path]:
    paths = [out / file for file in PLOT_FILES.values()]
    plot_cdf(result, paths[0])
    plot_p99_vs_qps(result, paths[1])
    plot_ablation(result, paths[2])
    return paths
