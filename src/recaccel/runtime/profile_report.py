"""A profile and its selection as a reader sees them: markdown tables and two plots.

    write_profile_outputs(profile, selection, Path("results/profile"))

writes profile.json (the latency model the scheduler reads), profile.md (latency per batch size
for every configuration, what could not run and why, and the selection table) and profile.png
(latency vs batch and throughput vs batch, one row of panels per artifact).
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from recaccel.paths import write_text
from recaccel.runtime.profile import Profile, ProfileEntry, save_profile
from recaccel.runtime.select import Judgement, Selection

PLOT_FILE = "profile.png"
MARKDOWN_FILE = "profile.md"
SELECTION_FILE = "selection.json"


def artifact_label(entry: ProfileEntry) -> str:
    return f"{entry.model}@{entry.artifact_id[:8]}"


def _config_label(entry: ProfileEntry) -> str:
    c = entry.config
    return f"{c.backend} {c.device} {c.precision} t{c.threads}"


def config_cells(entry: ProfileEntry) -> list[str]:
    """Artifact, backend, device, precision, threads and val AUC: a measured entry's row head
    in every latency table (markdown here, the terminal's in cli/profile.py)."""
    c = entry.config
    auc = "—" if entry.validation_auc is None else f"{entry.validation_auc:.4f}"
    return [artifact_label(entry), c.backend, c.device, c.precision, str(c.threads), auc]


def batch_cells(entry: ProfileEntry, batches: tuple[int, ...]) -> list[str]:
    """ "median (p99)" ms at each batch size, "—" where not measured."""
    return [
        "—" if (p := entry.point(b)) is None else f"{p.median_ms:.3f} ({p.p99_ms:.3f})"
        for b in batches
    ]


def selection_cells(j: Judgement) -> list[str]:
    """One measured row of the selection table (not for unmeasured configurations)."""
    assert j.request_p99_ms is not None and j.auc_change is not None
    return [
        j.key,
        f"{j.validation_auc:.4f}",
        f"{j.auc_change:+.2%}",
        f"{j.request_p99_ms:.3f}",
        str(j.requests_per_batch),
        str(j.workers),
        f"{j.requests_per_second:,.0f}",
        j.verdict,
    ]


def latency_markdown(profile: Profile) -> str:
    """Median / p99 ms per batch size for each measured configuration, then what failed."""
    batches = profile.batches
    lines = [
        "| artifact | backend | device | precision | threads | val AUC | load s | "
        + " | ".join(f"ms @{b} (p99)" for b in batches)
        + f" | rows/s @{profile.serving_batch} |",
        "|---|---|---|---|---|---:|---:|" + "---:|" * (len(batches) + 1),
    ]
    for e in profile.entries:
        if not e.ok:
            continue
        serving = e.point(profile.serving_batch)
        throughput = "—" if serving is None else f"{serving.rows_per_second:,.0f}"
        load = "—" if e.load_s is None else f"{e.load_s:.2f}"
        cells = [*config_cells(e), load, *batch_cells(e, batches), throughput]
        lines.append(f"| {' | '.join(cells)} |")
    missing = not_runnable(profile)
    if missing:
        lines += ["", "Not runnable here:", ""]
        lines += [f"- {what}: {why}" for what, why in missing.items()]
    return "\n".join(lines)


def not_runnable(profile: Profile) -> dict[str, str]:
    """'artifact backend device: precisions' -> reason, one line per artifact, backend and
    reason, so a quantized artifact that no ONNX backend takes is one line, not twelve."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for e in profile.entries:
        if e.ok:
            continue
        key = (artifact_label(e), e.config.backend, e.config.device, f"{e.status}: {e.reason}")
        label = f"{e.config.precision}/t{e.config.threads}"
        grouped.setdefault(key, []).append(label)
    return {
        f"{artifact} {backend} {device} ({', '.join(labels)})": reason
        for (artifact, backend, device, reason), labels in grouped.items()
    }


def selection_markdown(selection: Selection) -> str:
    needs = selection.requirements
    lines = [
        f"Requirements: p99 ≤ {needs.slo_p99_ms:g} ms per rank request of {needs.candidates} "
        f"candidates, validation AUC ≥ (1 − {needs.relative_budget:g}) × baseline "
        f"{selection.baseline_auc:.4f}, {needs.cores} core(s).",
        "",
        "| configuration | val AUC | ΔAUC rel | p99 one request ms | requests/batch | workers | "
        "est. requests/s | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for j in selection.table:
        if j.request_p99_ms is None:
            continue  # not measured: listed under "not runnable"
        lines.append(f"| {' | '.join(selection_cells(j))} |")
    lines.append("")
    lines.append(selection_summary(selection))
    return "\n".join(lines)


def selection_summary(selection: Selection) -> str:
    if selection.selected is None:
        return (
            "No configuration meets both the SLO and the accuracy budget: loosen one, or "
            "optimize the model further (`recaccel optimize`)."
        )
    s = selection.selected
    text = f"Selected: {s.key} — est. {s.requests_per_second:,.0f} requests/s."
    if selection.speedup_median is not None and selection.speedup_p99 is not None:
        text += (
            f" At {selection.requirements.candidates} rows it is {selection.speedup_median:.2f}× "
            f"faster (median; {selection.speedup_p99:.2f}× at p99) than "
            f"{selection.compared_with}."
        )
    return text


def plot_profile(profile: Profile, path: Path) -> None:
    """Latency (median, p99 as the shaded band's top) and throughput vs batch size."""
    artifacts = list(dict.fromkeys(artifact_label(e) for e in profile.entries if e.ok))
    fig = Figure(figsize=(12, 4.2 * len(artifacts)), layout="constrained")
    axes = fig.subplots(len(artifacts), 2, squeeze=False)
    for row, artifact in enumerate(artifacts):
        latency_ax, throughput_ax = axes[row]
        for ax in (latency_ax, throughput_ax):  # 20 distinct colours: configurations are many
            ax.set_prop_cycle(color=[colormaps["tab20"](i) for i in range(20)])
        for e in (e for e in profile.entries if e.ok and artifact_label(e) == artifact):
            batches = [p.batch for p in e.points]
            median = [p.median_ms for p in e.points]
            style = "-" if e.config.threads == 1 else "--"
            (line,) = latency_ax.plot(batches, median, style, marker="o", label=_config_label(e))
            latency_ax.fill_between(
                batches, median, [p.p99_ms for p in e.points], color=line.get_color(), alpha=0.05
            )
            throughput_ax.plot(
                batches,
                [p.rows_per_second for p in e.points],
                style,
                marker="o",
                color=line.get_color(),
            )
        latency_ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch (rows)",
            ylabel="ms (median; band to p99)",
            title=f"{artifact}: latency",
        )
        throughput_ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch (rows)",
            ylabel="rows / s (one executor)",
            title=f"{artifact}: throughput",
        )
        latency_ax.legend(fontsize=7, loc="upper left")
        for ax in (latency_ax, throughput_ax):
            ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=110)


def write_profile_outputs(profile: Profile, selection: Selection | None, out: Path) -> Path:
    """profile.json, profile.md, profile.png (and selection.json) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    save_profile(profile, out)
    markdown = [
        f"# Profile: {profile.dataset}",
        "",
        f"Machine: {profile.machine.get('cpu')}, {profile.machine.get('cores')} cores, "
        f"GPUs: {', '.join(profile.machine.get('gpus', [])) or 'none'}; "
        f"{profile.created_at}. Baseline: {profile.baseline}. Configurations timed "
        "interleaved on the same validation rows; val AUC from each configuration's own "
        f"scores on {profile.validation_rows:,} validation rows.",
        "",
        latency_markdown(profile),
    ]
    if selection is not None:
        markdown += ["", "## Selection", "", selection_markdown(selection)]
        write_text(out / SELECTION_FILE, json.dumps(selection.to_dict(), indent=2) + "\n")
    write_text(out / MARKDOWN_FILE, "\n".join(markdown) + "\n")
    if any(e.ok for e in profile.entries):
        plot_profile(profile, out / PLOT_FILE)
    return out
