"""The `recaccel` command line: parses, calls the Python API, prints.

Errors a user can fix (`RecaccelError`) are printed with their hint and exit code 2; no
traceback reaches the terminal for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import recaccel
from recaccel.deploy.commands import add_deploy_parser
from recaccel.errors import ConfigError, RecaccelError, UnknownNameError

if TYPE_CHECKING:
    from recaccel.bench.results import BenchResult
    from recaccel.data.dataset import Dataset
    from recaccel.optimize.report import OptimizeReport
    from recaccel.runtime.profile import Profile
    from recaccel.runtime.select import Requirements, Selection
    from recaccel.serve.choice import ServedSelection
    from recaccel.train.pipeline import TrainReport

# Piped output (CI logs, `| tee`) would otherwise be squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True)


def _names(value: str, known: Sequence[str], kind: str) -> list[str]:
    """A comma-separated list of names, or "all"; unknown names are refused up front."""
    names = list(known) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in known:
            raise UnknownNameError(kind, name, list(known))
    return names


def _cmd_data(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset

    dataset = load_dataset(args.dataset, DatasetOptions(progress=not args.json))
    summary = {
        "dataset": dataset.name,
        "synthetic": dataset.synthetic,
        "rows": dataset.rows(),
        "positive_rate": {
            s: round(float(dataset.split(s).label.mean()), 4) for s in dataset.rows()
        },
        "features": {
            kind: [f.name for f in dataset.schema.features if f.kind.value == kind]
            for kind in ("dense", "categorical", "multi_hot")
        },
        **{k: v for k, v in dataset.info.items() if k in ("source", "split", "label", "note")},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            console.print(f"[bold]{key}[/bold]: {escape(str(value))}")
    return 0


def _train_table(report: TrainReport, test_rows: int) -> Table:
    """Each model's scores, then the baselines', with ΔAUC against the first baseline."""
    table = Table(title=f"{report.dataset}: test split ({test_rows:,} rows)")
    columns = ["model", "parameters", "best epoch", "val AUC", "test AUC", "test logloss"]
    reference = report.baselines[0].name if report.baselines else None
    if reference:
        columns.append("test ΔAUC [95% CI]")
        table.caption = f"ΔAUC: minus {reference}'s test AUC, paired bootstrap over the same rows"
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for m in report.models:
        table.add_row(
            f"{m.model} ({m.preset})",
            f"{m.manifest.parameters:,}",
            str(m.fit.best_epoch),
            f"{m.validation.auc:.4f}",
            f"{m.test.auc:.4f}",
            f"{m.test.logloss:.4f}",
            *([str(m.vs_baselines[reference])] if reference else []),
        )
    for b in report.baselines:
        scores = (b.validation.auc, b.test.auc, b.test.logloss)
        table.add_row(f"{b.name} ({b.setting})", "", "", *(f"{x:.4f}" for x in scores))
    return table


def _cmd_train(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.models.registry import MODELS
    from recaccel.train.pipeline import train_models
    from recaccel.train.trainer import TrainConfig

    models = _names(args.model, list(MODELS), "model")
    runs = []
    for model in models:
        for preset in _names(args.preset, list(MODELS[model].presets), f"preset for {model}"):
            runs.append((model, preset))
    config = TrainConfig(
        max_epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    if args.rows is not None and args.dataset != "criteo-synthetic":
        raise ConfigError(
            f"--rows applies to criteo-synthetic only, not {args.dataset}", "drop --rows"
        )
    progress = not args.json
    dataset = load_dataset(
        args.dataset, DatasetOptions(progress=progress, synthetic_rows=args.rows)
    )
    report = train_models(
        dataset, runs, Path(args.out), config, not args.no_baselines, progress=progress
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    table = _train_table(report, len(dataset.test))
    console.print(table)
    if report.synthetic:
        console.print("[yellow]synthetic data: these AUCs mean nothing about accuracy[/yellow]")
    for m in report.models:
        console.print(f"artifact: {m.path}")
    return 0


def _training_text(training: dict[str, Any]) -> str:
    if not training:
        return "not recorded"
    best = training.get("best_epoch")
    kept = "the starting weights" if best == 0 else f"epoch {best}"
    return (
        f"best: {kept} ({training.get('epochs_run')} epochs trained, {training.get('seconds')} s)"
    )


def _delta_text(delta: dict[str, float] | None) -> str:
    if not delta:
        return "not measured"
    return f"{delta['delta']:+.4f} [95% CI {delta['low']:+.4f}, {delta['high']:+.4f}]"


def _cmd_import(args: argparse.Namespace) -> int:
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.train.imports import import_artifact

    try:
        init = json.loads(args.init) if args.init else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--init is not JSON: {exc}", "--init '{\"dim\": 16}'") from None
    if not isinstance(init, dict):
        raise ConfigError(
            "--init must be a JSON object of keyword arguments", "e.g. '{\"dim\": 16}'"
        )
    dataset = (
        load_dataset(args.dataset, DatasetOptions(progress=not args.json)) if args.dataset else None
    )
    report = import_artifact(
        args.model,
        Path(args.schema),
        Path(args.out),
        weights=Path(args.weights) if args.weights else None,
        init=init,
        dataset=dataset,
    )
    manifest = report.manifest
    if args.json:
        print(json.dumps({"path": str(report.path), **manifest.to_dict()}, indent=2))
        return 0
    console.print(
        f"imported {manifest.model_config['format']} model {manifest.artifact_id}: "
        f"{manifest.parameters:,} parameters, {manifest.weights_bytes:,} bytes"
    )
    for split, m in manifest.metrics.items():
        console.print(
            f"{split} AUC {m['auc']:.4f}, logloss {m['logloss']:.4f} ({m['rows']:,} rows)"
        )
    if report.unbound:
        console.print(
            f"[yellow]features no model input takes: {', '.join(report.unbound)}[/yellow]"
        )
    console.print(f"artifact: {report.path}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from recaccel.artifact import read_manifest

    manifest = read_manifest(Path(args.artifact))
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    table = Table(show_header=False, title=f"artifact {manifest.artifact_id}")
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "model": f"{manifest.model} (preset {manifest.preset or 'custom'})",
        "config": json.dumps(manifest.model_config),
        "dataset": f"{manifest.dataset.get('name')} "
        f"(synthetic: {manifest.dataset.get('synthetic')})"
        if manifest.dataset
        else "none (imported without --dataset)",
        "features": ", ".join(f"{f['name']}:{f['kind']}" for f in manifest.schema["features"]),
        "parameters": f"{manifest.parameters:,}",
        "weights on disk": f"{manifest.weights_bytes:,} bytes",
        "resident": f"{manifest.resident_bytes:,} bytes",
        **{
            f"{split} AUC / logloss": f"{m['auc']:.4f} / {m['logloss']:.4f} ({m['rows']:,} rows)"
            for split, m in manifest.metrics.items()
        },
        **{
            f"reference: {name}": f"test AUC {ref['test']['auc']:.4f} ({ref['setting']}); "
            f"this model's ΔAUC {_delta_text(ref.get('delta_test_auc'))}"
            for name, ref in manifest.references.items()
        },
        "training": _training_text(manifest.training),
        "parent": str(manifest.parent),
        "lineage": " → ".join(f"{s.op}({json.dumps(s.params)})" for s in manifest.lineage),
        "transforms": json.dumps(list(manifest.transforms)) if manifest.transforms else "none",
        "format version": str(manifest.format_version),
        "created": manifest.created_at,
        "software": json.dumps(manifest.software),
    }
    for key, value in rows.items():
        table.add_row(key, escape(value))
    console.print(table)
    return 0


def _optimize_table(report: OptimizeReport) -> Table:
    batch = report.serving_batch
    table = Table(title=f"recipe {report.recipe!r} on {report.dataset}")
    columns = [
        "variant", "model", "params", "bytes on disk", "ms @1", f"ms @{batch}",
        f"rows/s @{batch}", "speedup", "smaller", "val AUC", "test AUC", "test ΔAUC [95% CI]",
    ]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    for v in report.variants:
        table.add_row(
            v.name,
            v.model,
            f"{v.parameters:,}",
            f"{v.weights_bytes:,}",
            f"{v.latency_batch1.median_ms:.3f}",
            f"{v.latency_serving.median_ms:.3f}",
            f"{v.latency_serving.rows_per_second:,.0f}",
            f"{v.speedup:.2f}x",
            f"{v.size_ratio:.2f}x",
            f"{v.validation.auc:.4f}",
            f"{v.test.auc:.4f}",
            str(v.delta_vs_original) if v.delta_vs_original else "—",
        )
    table.caption = (
        f"latency: median model compute on {report.machine['threads']} thread(s), variants "
        "interleaved; ΔAUC: paired bootstrap vs the original on the same test rows"
    )
    return table


def _dataset_of(artifact: Path, progress: bool) -> Dataset:
    """The dataset `artifact` was trained on, as its manifest names it."""
    from recaccel.artifact import read_manifest
    from recaccel.data.registry import DatasetOptions, load_dataset

    manifest = read_manifest(artifact)
    if "name" not in manifest.dataset:
        raise ConfigError(
            f"{artifact}'s manifest does not name the dataset it was trained on",
            "import it with --dataset NAME (the dataset whose rows it scores)"
            if manifest.model == "imported"
            else "re-create it with `recaccel train`",
        )
    synthetic_rows = manifest.dataset.get("config", {}).get("rows")
    return load_dataset(
        manifest.dataset["name"], DatasetOptions(progress=progress, synthetic_rows=synthetic_rows)
    )


def _cmd_optimize(args: argparse.Namespace) -> int:
    from recaccel.optimize.pipeline import run_recipe
    from recaccel.optimize.recipe import load_recipe
    from recaccel.optimize.report import build_report
    from recaccel.runtime.trial_timing import SEARCH_TIMERS
    from recaccel.train.trainer import TrainConfig

    recipe = load_recipe(args.recipe)  # a bad recipe fails before any data is loaded
    if args.threads is not None:
        recipe = dataclasses.replace(
            recipe, measure=dataclasses.replace(recipe.measure, threads=args.threads)
        )
    progress = not args.json
    dataset = _dataset_of(Path(args.artifact), progress)
    config = TrainConfig(max_epochs=args.epochs, seed=args.seed)
    out = Path(args.out)
    run = run_recipe(
        Path(args.artifact), dataset, recipe, out, config, progress=progress, timers=SEARCH_TIMERS
    )
    report = build_report(run, dataset)
    report.write(out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    console.print(_optimize_table(report))
    for d in report.decisions:
        console.print(
            f"step {escape(d['step'])}: {escape(d['attempt'])} → {d['decision']}: "
            f"{escape(d['reason'])}"
        )
    if report.synthetic:
        console.print("[yellow]synthetic data: these AUCs mean nothing about accuracy[/yellow]")
    console.print(f"final artifact: {report.final}")
    console.print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    return 0


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{value!r} is not a comma list of integers", "e.g. 1,16,64") from None


def _words(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _profile_table(profile: Profile) -> Table:
    from recaccel.runtime.profile_report import batch_cells, config_cells

    batches = profile.batches
    table = Table(title=f"latency per batch: median ms (p99) — {profile.dataset}")
    for column in ("artifact", "backend", "device", "precision", "thr", "val AUC"):
        table.add_column(column, no_wrap=True)
    for batch in batches:
        table.add_column(f"@{batch}", justify="right", no_wrap=True)
    for e in profile.entries:
        if e.ok:
            table.add_row(*config_cells(e), *batch_cells(e, batches))
    table.caption = "configurations timed interleaved on the same validation rows"
    return table


def _selection_table(selection: Selection) -> Table:
    from recaccel.runtime.profile_report import selection_cells

    needs = selection.requirements
    table = Table(
        title=f"selection: p99 ≤ {needs.slo_p99_ms:g} ms for {needs.candidates} candidates, "
        f"AUC budget {needs.relative_budget:g} rel, {needs.cores} core(s)"
    )
    columns = ["configuration", "val AUC", "ΔAUC", f"p99 @{needs.candidates}", "req/batch",
               "workers", "est. req/s", "verdict"]  # fmt: skip
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("configuration", "verdict") else "right"
        )
    for j in selection.table:
        if j.request_p99_ms is not None:  # unmeasured ones are listed as not runnable
            table.add_row(*(escape(cell) for cell in selection_cells(j)))
    return table


def _cmd_profile(args: argparse.Namespace) -> int:
    import os

    from recaccel.runtime.profile import load_profile
    from recaccel.runtime.profile_report import (
        not_runnable,
        selection_summary,
        write_profile_outputs,
    )
    from recaccel.runtime.profiler import ProfileOptions, run_profile
    from recaccel.runtime.select import Requirements, select
    from recaccel.serve.choice import SERVED_FILE, served_table

    needs = Requirements(
        args.slo_ms, args.candidates, args.accuracy_budget, args.cores or os.cpu_count() or 1
    )
    out = Path(args.out)
    # Every argument is checked before anything is loaded or measured.
    options = ProfileOptions(
        backends=_words(args.backends),
        devices=_words(args.devices),
        precisions=_words(args.precisions),
        threads=None if args.threads is None else _ints(args.threads),
        batches=_ints(args.batches),
        serving_batch=args.candidates,
        repeats=args.repeats,
        seconds_per_batch=args.seconds_per_batch,
    )
    if args.profile is not None:
        if args.artifacts:
            raise ConfigError("give artifacts to measure, or --from a saved profile, not both")
        profile = load_profile(Path(args.profile))
    else:
        if not args.artifacts:
            raise ConfigError(
                "no artifacts to profile", "name artifact directories, or --from a profile.json"
            )
        progress = not args.json
        dataset = _dataset_of(Path(args.artifacts[0]), progress)
        profile = run_profile(
            [Path(a) for a in args.artifacts], dataset, options, progress=progress
        )
    selection = select(profile, needs) if args.select else None
    write_profile_outputs(profile, selection, out)
    served = None
    if args.served:
        if not args.select:
            raise ConfigError("--served chooses among what --select ranks", "add --select")
        served = _served_selection(profile, needs, args, out)
    if args.json:
        print(
            json.dumps(
                {
                    "profile": profile.to_dict(),
                    "selection": None if selection is None else selection.to_dict(),
                    "served": None if served is None else served.to_dict(),
                    "out": str(out),
                },
                indent=2,
            )
        )
        return 0
    console.print(_profile_table(profile))
    for what, why in not_runnable(profile).items():
        console.print(f"not runnable: {escape(what)}: {escape(why)}", highlight=False)
    if selection is not None:
        console.print(_selection_table(selection))
        console.print(escape(selection_summary(selection)))
    if served is not None:
        console.print(escape(served_table(served)), highlight=False)
        console.print(f"served selection: {out / SERVED_FILE}, {out / 'served.md'}")
    console.print(f"profile: {out / 'profile.json'}, {out / 'profile.md'}, {out / 'profile.png'}")
    return 0


def _served_selection(
    profile: Profile, needs: Requirements, args: argparse.Namespace, out: Path
) -> ServedSelection:
    """Measure the best candidates served (bench/served.py) and write served.json and .md."""
    from recaccel.bench.served import ServedOptions, select_served
    from recaccel.bench.workload import RankWorkload
    from recaccel.data.registry import DatasetOptions, load_dataset
    from recaccel.runtime.profiler import describe_machine, machine_facts
    from recaccel.serve.choice import save_served, served_table

    if not profile.dataset:
        raise ConfigError("the profile does not name its dataset: the workload comes from it")
    dataset = load_dataset(profile.dataset, DatasetOptions(progress=False))
    workload = RankWorkload.from_dataset(dataset, n_samples=20_000, seed=0)
    options = ServedOptions(
        slo_ms=needs.slo_p99_ms,
        relative_budget=needs.relative_budget,
        cores=needs.cores,
        budget_s=args.served_budget_s,
    )
    say = (lambda line: None) if args.json else (lambda line: errors.print(line, highlight=False))
    served = select_served(
        profile,
        workload,
        options,
        out / "served",
        progress=say,
        machine=describe_machine(machine_facts()),
    )
    save_served(served, out)
    (out / "served.md").write_text(served_table(served))
    return served


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from recaccel.runtime.profile import load_profile
    from recaccel.serve.choice import apply_served, served_selection_for
    from recaccel.serve.config import load_serve_config
    from recaccel.serve.server import apply_selection, serve

    overrides: dict[str, dict[str, Any]] = {
        "server": {"host": args.host, "port": args.port},
        "slo": {"p99_ms": args.slo_ms},
        "workers": {"min": args.min_workers, "max": args.max_workers},
        "plane": {"processes": args.processes, "execution": args.execution},
        "rank": {"users": args.users, "items": args.items, "redis": args.redis},
        "part_cache": {"ttl_s": args.part_cache_ttl_s},
    }
    if args.backend or args.precision or args.threads or args.lanes or args.reuse:
        overrides["workers"]["executors"] = [
            {
                "backend": args.backend or "onnxruntime",
                "precision": args.precision or "fp32",
                "threads": args.threads or 1,
                "reuse": args.reuse,
                **({"count": args.lanes} if args.lanes else {}),
            }
        ]
    overrides = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
    config = load_serve_config(None if args.config is None else Path(args.config), overrides)
    artifacts = list(args.artifacts)
    if args.select:
        if args.profile is None or artifacts:
            raise ConfigError(
                "--select serves what a profile selects: give --profile and no artifacts",
                "recaccel serve --profile results/profile-movielens/profile.json --select",
            )
        profile = load_profile(Path(args.profile))
        served = served_selection_for(Path(args.profile), profile, config.slo.p99_ms)
        if served is not None:
            spec, config = apply_served(config, served)
            chosen = served.chosen
            assert chosen is not None  # apply_served refuses a selection without one
            errors.print(f"selected by serving: {chosen.candidate.label}", highlight=False)
        else:
            spec, config, row = apply_selection(
                config, profile, args.accuracy_budget, os.cpu_count() or 1
            )
            errors.print(
                f"selected by compute (no served.json beside the profile): {row.key}, "
                f"{config.plane.processes} process(es)",
                highlight=False,
            )
        artifacts = [spec]
    elif not artifacts:
        raise ConfigError("no artifacts to serve", "name artifact directories, or --select")
    errors.print(
        f"recaccel serving {', '.join(artifacts)} on http://{config.server.host}:"
        f"{config.server.port} (Ctrl-C or SIGTERM drains and stops)",
        highlight=False,
    )
    return serve(artifacts, config, None if args.profile is None else Path(args.profile))


def _bench_command(args: argparse.Namespace) -> str:
    """The `recaccel bench` command line that reproduces this run, for the report."""
    import shlex

    words = ["recaccel", "bench", *args.artifacts, "--baseline", args.baseline]
    if args.profile:
        words += ["--profile", args.profile]
    words += ["--slo-ms", f"{args.slo_ms:g}", "--accuracy-budget", f"{args.accuracy_budget:g}"]
    if args.duration_s is not None:
        words += ["--duration-s", f"{args.duration_s:g}"]
    if args.quick:
        words.append("--quick")
    if args.base_port is not None:
        words += ["--base-port", str(args.base_port)]
    return shlex.join([*words, "--out", args.out])


def _bench_table(result: BenchResult) -> Table:
    table = Table(title=f"recaccel bench: p99 ≤ {result.slo_ms:g} ms per rank request")
    columns = ["configuration", "model", "runtime", "served AUC", "max QPS in SLO",
               "Offline QPS", f"p99 ms @ {result.reference_qps:.4g} QPS", "LoadGen"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for c in result.configs:
        ref = c.at_reference
        table.add_row(
            c.name,
            c.model,
            escape(c.runtime),
            "—" if c.served_auc is None else f"{c.served_auc:.4f}",
            "none" if c.max_qps is None else f"{c.max_qps:.1f}",
            "—" if c.offline is None else f"{c.offline.ok_qps:.1f}",
            "—" if ref is None else f"{ref.p99_ms:.2f}",
            "—" if ref is None else ref.verdict,
        )
    return table


def _cmd_bench(args: argparse.Namespace) -> int:
    from recaccel.bench.fleet import choose_ports
    from recaccel.bench.plan import MAX_SERVERS, check_coverage
    from recaccel.bench.report import write_report
    from recaccel.bench.run import BenchOptions, artifact_ref, default_candidates, run_bench
    from recaccel.runtime.profile import load_profile

    # Every argument is checked before anything is loaded, started or measured.
    settings: dict[str, Any] = {
        "slo_ms": args.slo_ms,
        "relative_budget": args.accuracy_budget,
        "base_port": args.base_port,
    }
    if args.duration_s is not None:
        settings["duration_s"] = args.duration_s
    options = BenchOptions.quick_settings(**settings) if args.quick else BenchOptions(**settings)
    if args.base_port is not None:
        choose_ports(MAX_SERVERS, args.base_port)  # ConfigError if one is taken
    heavy = Path(args.baseline)
    heavy_ref = artifact_ref(heavy)
    candidates = [Path(a) for a in args.artifacts] or default_candidates(heavy)
    refs = [artifact_ref(c) for c in candidates]
    profile = None if args.profile is None else load_profile(Path(args.profile))
    if profile is not None:
        check_coverage(profile, heavy_ref, refs)
    dataset = _dataset_of(heavy, progress=False)
    out = Path(args.out)

    def say(text: str) -> None:
        errors.print(escape(text), highlight=False)

    result = run_bench(
        heavy,
        candidates,
        dataset,
        out,
        options,
        profile,
        profile_source=args.profile or "",
        command=_bench_command(args),
        say=say,
    )
    written = write_report(result, out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    console.print(_bench_table(result))
    for bar in result.headline.bars:
        value = "—" if bar.value is None else f"{bar.value:.4g}"
        paper = {True: "meets", False: "misses", None: "cannot judge"}[bar.meets_paper]
        aim = {True: "meets", False: "misses", None: "cannot judge"}[bar.meets_aim]
        console.print(
            f"{escape(bar.claim)}: {value} — {paper} the paper's bar ({bar.paper:g}), {aim} "
            f"our aim ({bar.aim:g}); {escape(bar.basis)}",
            highlight=False,
        )
    console.print(f"report: {', '.join(str(p) for p in written)} ({result.wall_s:.0f} s)")
    return 0


def _cmd_features_push(args: argparse.Namespace) -> int:
    from recaccel.artifact import read_manifest
    from recaccel.data.schema import FeatureSchema
    from recaccel.data.tables import read_table
    from recaccel.serve.config import RankSection
    from recaccel.serve.redis_source import write_tables

    namespace = args.namespace or RankSection.redis_namespace
    schema = FeatureSchema.from_dict(read_manifest(Path(args.artifact)).schema)
    users, items = read_table(Path(args.users)), read_table(Path(args.items))
    counts = write_tables(schema, users, items, args.redis, namespace)
    console.print(
        f"wrote {counts['users']:,} user and {counts['items']:,} item hashes to {args.redis} "
        f"under {namespace}:"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recaccel",
        description="Make recommendation models fast enough for real-time serving, and serve them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--version", action="version", version=f"recaccel {recaccel.__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = verbs.add_parser("data", help="fetch, cache and summarise a dataset")
    data.add_argument(
        "--dataset",
        default="movielens-100k",
        help="movielens-100k (default), criteo-synthetic, or a dataset spec file of your own "
        "(.toml: your interactions, users and items; docs/importing.md)",
    )
    data.add_argument("--json", action="store_true", help="print the summary as JSON")
    data.set_defaults(run=_cmd_data)

    train = verbs.add_parser(
        "train",
        help="train zoo models and save artifacts",
        description="Train models with early stopping on validation AUC; report test AUC and "
        "logloss beside logistic-regression and item-popularity baselines.",
    )
    train.add_argument(
        "--dataset", default="movielens-100k", help="dataset name (default: %(default)s)"
    )
    train.add_argument(
        "--model",
        default="dlrm",
        help="dlrm, dcnv2, deepfm, wide_deep, tower, a comma list, or all",
    )
    train.add_argument("--preset", default="heavy", help="heavy, base, small, a comma list, or all")
    train.add_argument(
        "--out", required=True, help="artifact directory (a parent directory when training several)"
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="maximum epochs (default: %(default)s); 0 saves the initial random weights, "
        "for size and speed studies",
    )
    train.add_argument(
        "--rows", type=int, help="rows to generate (criteo-synthetic only; default: 1,000,000)"
    )
    train.add_argument(
        "--patience", type=int, default=2, help="epochs without validation gain before stopping"
    )
    train.add_argument("--batch-size", type=int, default=512)
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    train.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-baselines", action="store_true", help="skip the reference baselines")
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    train.set_defaults(run=_cmd_train)

    imports = verbs.add_parser(
        "import",
        help="make a model trained elsewhere (ONNX, torch.export, a PyTorch class) an artifact",
        description="Bind a ranking model of your own to recaccel's features with a schema file "
        "(TOML or YAML: the features, and which features each model input takes), run it on a "
        "probe batch to check the binding, and save it as an artifact that the other verbs "
        "take. See docs/importing.md.",
    )
    imports.add_argument(
        "model", help="model.onnx, model.pt2 (torch.export.save) or package.module:Class"
    )
    imports.add_argument("--schema", required=True, help="the schema file (.toml, .yaml)")
    imports.add_argument("--out", required=True, help="artifact directory to write")
    imports.add_argument(
        "--weights", help="a class's state dict (.safetensors, or .pt from torch.save)"
    )
    imports.add_argument("--init", help="a class's constructor keyword arguments, as JSON")
    imports.add_argument(
        "--dataset", help="score it on this dataset (its schema must be the file's) for AUC"
    )
    imports.add_argument("--json", action="store_true", help="print the manifest as JSON")
    imports.set_defaults(run=_cmd_import)

    features = verbs.add_parser("features", help="write feature tables to an online store")
    stores = features.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = stores.add_parser(
        "push",
        help="write a users and an items table to Redis, for `serve --redis`",
        description="Check a users and an items table against an artifact's schema, as "
        "`serve --users --items` does, and write them to Redis in the layout `serve --redis` "
        "reads: one hash per user and item (docs/feature-sources.md).",
    )
    push.add_argument("artifact", help="the artifact whose schema the tables follow")
    push.add_argument("--users", required=True, help="user_id + request-side features")
    push.add_argument("--items", required=True, help="item_id + candidate-side features")
    push.add_argument("--redis", required=True, help="the store, e.g. redis://localhost:6379/0")
    push.add_argument(
        "--namespace",
        help="key prefix (default: serve's, recaccel): {namespace}:user:{id}, "
        "{namespace}:item:{id}",
    )
    push.set_defaults(run=_cmd_features_push)

    inspect = verbs.add_parser("inspect", help="show an artifact's manifest")
    inspect.add_argument("artifact", help="artifact directory")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.set_defaults(run=_cmd_inspect)

    optimize = verbs.add_parser(
        "optimize",
        help="distil, search, prune and quantize an artifact under an accuracy guard",
        description="Apply a recipe of optimization steps to a trained artifact. Each step is "
        "judged on validation AUC against the original (and must buy size or speed); every "
        "attempt is saved with its lineage, and a report compares the kept variants.",
    )
    optimize.add_argument("artifact", help="trained artifact directory (recaccel train --out)")
    optimize.add_argument(
        "--recipe",
        default="default",
        help="a built-in recipe (default, search, search-reuse; default: %(default)s) or a "
        ".toml/.yaml file",
    )
    optimize.add_argument("--out", required=True, help="directory for the variants and report")
    optimize.add_argument(
        "--threads", type=int, help="threads for the latency measurements (default: the recipe's)"
    )
    optimize.add_argument(
        "--epochs", type=int, default=20, help="maximum epochs of each training step"
    )
    optimize.add_argument("--seed", type=int, default=0)
    optimize.add_argument("--json", action="store_true", help="print the report as JSON")
    optimize.set_defaults(run=_cmd_optimize)

    profile = verbs.add_parser(
        "profile",
        help="measure every backend, precision and thread count; select the best for an SLO",
        description="Time each (artifact, backend, device, precision, threads) configuration "
        "at several batch sizes, interleaved, and score the validation split with each. Writes "
        "profile.json (the latency model serving uses), profile.md and profile.png. With "
        "--select, picks the configuration that serves the most rank requests within the SLO "
        "and accuracy budget, and explains the choice.",
    )
    profile.add_argument(
        "artifacts", nargs="*", help="artifact directories; the first is the baseline"
    )
    profile.add_argument(
        "--from", dest="profile", help="select from a saved profile.json instead of measuring"
    )
    profile.add_argument(
        "--out", default="artifacts/profile", help="output directory (default: %(default)s)"
    )
    profile.add_argument("--backends", help="comma list (default: every installed backend)")
    profile.add_argument(
        "--devices", help="comma list, e.g. cpu,cuda (default: cpu, and cuda when visible)"
    )
    profile.add_argument(
        "--precisions", help="comma list (default: all each backend runs natively)"
    )
    profile.add_argument(
        "--threads", help="comma list of intra-op thread counts (default: 1 and all cores)"
    )
    profile.add_argument(
        "--batches",
        default="1,16,64,256,1024",
        help="batch sizes in rows (default: %(default)s); the --candidates size is added",
    )
    profile.add_argument(
        "--repeats",
        type=int,
        default=200,
        help="timed rounds per batch size at most (default: %(default)s)",
    )
    profile.add_argument(
        "--seconds-per-batch",
        type=float,
        default=30.0,
        help="cap on each batch size: fewer rounds, at least 30 (default: %(default)s)",
    )
    profile.add_argument("--select", action="store_true", help="pick the configuration for the SLO")
    profile.add_argument(
        "--slo-ms",
        type=float,
        default=50.0,
        help="p99 latency per rank request (default: %(default)s)",
    )
    profile.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="candidates per rank request, the serving batch (default: %(default)s)",
    )
    profile.add_argument(
        "--accuracy-budget",
        type=float,
        default=0.001,
        help="relative validation-AUC loss allowed vs the baseline (default: %(default)s)",
    )
    profile.add_argument(
        "--cores", type=int, help="cores the serving workers may use (default: all)"
    )
    profile.add_argument(
        "--served",
        action="store_true",
        help="with --select: serve the best candidates on this machine under load and choose "
        "by what they serve (writes served.json and served.md, which `serve --select` uses)",
    )
    profile.add_argument(
        "--served-budget-s",
        type=float,
        default=300.0,
        help="time for the served candidates, the re-measurement not included "
        "(default: %(default)s)",
    )
    profile.add_argument(
        "--json", action="store_true", help="print the profile and selection as JSON"
    )
    profile.set_defaults(run=_cmd_profile)

    serve = verbs.add_parser(
        "serve",
        help="serve artifacts over HTTP: Open Inference Protocol, /v1/rank, /metrics",
        description="Serve artifacts with SLO-aware dynamic batching in worker processes, "
        "load-aware routing, autoscaling and admission control. Settings: --config FILE (TOML "
        "or YAML), then RECACCEL_<SECTION>_<KEY> environment variables, then these flags.",
    )
    serve.add_argument("artifacts", nargs="*", help="artifact directories, each PATH or NAME=PATH")
    serve.add_argument("--config", help="serving config file (.toml, .yaml)")
    serve.add_argument("--profile", help="profile.json from `recaccel profile`: latency models")
    serve.add_argument("--host", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--slo-ms", type=float, help="p99 target per rank request (default 50)")
    serve.add_argument(
        "--processes",
        type=int,
        help="front processes on the one port (default 0: one per core; docs/serving-plane.md)",
    )
    serve.add_argument(
        "--execution",
        choices=["in-process", "workers"],
        help="run executors in each front process (default) or in worker processes",
    )
    serve.add_argument(
        "--lanes",
        type=int,
        help="in-process: executors of the model in each front (default 1; 2+ split requests)",
    )
    serve.add_argument(
        "--users",
        help="table (.parquet, .csv): user_id + request-side features (docs/importing.md)",
    )
    serve.add_argument("--items", help="table (.parquet, .csv): item_id + candidate-side features")
    serve.add_argument(
        "--redis",
        help="read each request's features from Redis at this URL instead, e.g. "
        "redis://localhost:6379/0 (docs/feature-sources.md; write them: recaccel features push)",
    )
    serve.add_argument("--min-workers", type=int, help="worker processes at least (default 1)")
    serve.add_argument("--max-workers", type=int, help="worker processes at most (default 2)")
    serve.add_argument("--backend", help="executor backend for the workers (default onnxruntime)")
    serve.add_argument("--precision", help="executor precision (default fp32)")
    serve.add_argument("--threads", type=int, help="threads per worker (default 1)")
    serve.add_argument(
        "--reuse",
        action="store_true",
        help="compute each rank request's user part once, not per candidate (fp32 on "
        "torch-eager, torch-aot, onnxruntime; docs/reuse.md)",
    )
    serve.add_argument(
        "--part-cache-ttl-s",
        type=float,
        help="with --reuse: keep each user's request part this many seconds and reuse it "
        "across requests (torch-eager, onnxruntime; default 0: off; docs/reuse.md)",
    )
    serve.add_argument(
        "--select",
        action="store_true",
        help="serve the configuration `recaccel profile --select` picks from --profile for "
        "--slo-ms (artifact, backend, precision, threads, workers)",
    )
    serve.add_argument(
        "--accuracy-budget",
        type=float,
        default=0.001,
        help="with --select: relative validation-AUC loss allowed (default: %(default)s)",
    )
    serve.set_defaults(run=_cmd_serve)

    bench = verbs.add_parser(
        "bench",
        help="benchmark baseline, ablations and recaccel under MLPerf LoadGen; write a report",
        description="Serve four configurations side by side — baseline (the heavy FP32 model "
        "in PyTorch eager, one request at a time), model-only, system-only and recaccel (the "
        "selected model, runtime, batching and workers) — and measure each, interleaved, under "
        "the same p99 SLO: served test AUC, Offline throughput, the highest Server-scenario QPS "
        "within the SLO, and latency at the baseline's highest QPS. Writes report.md, "
        "report.json and plots to --out.",
    )
    bench.add_argument(
        "artifacts",
        nargs="*",
        help="artifacts recaccel may select among (default: those `recaccel optimize` kept "
        "in BASELINE-optimized)",
    )
    bench.add_argument(
        "--baseline",
        default="artifacts/dlrm-heavy",
        help="the heavy FP32 artifact (default: %(default)s)",
    )
    bench.add_argument(
        "--profile",
        help="profile.json of the baseline (first) and the artifacts (default: measure one, "
        "reduced, in about a minute or two)",
    )
    bench.add_argument(
        "--slo-ms",
        type=float,
        default=50.0,
        help="p99 latency bound per rank request, for every configuration (default: %(default)s)",
    )
    bench.add_argument(
        "--duration-s",
        type=float,
        help="minimum length of each Server-scenario run (default 10; 4 with --quick)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="short runs, few of them: a smoke check in minutes"
    )
    bench.add_argument(
        "--accuracy-budget",
        type=float,
        default=0.001,
        help="relative validation-AUC loss the selection may accept (default: %(default)s)",
    )
    bench.add_argument(
        "--base-port",
        type=int,
        help="serve on 127.0.0.1 ports BASE..BASE+3 (default: free ports)",
    )
    bench.add_argument(
        "--out", default="results/bench", help="report directory (default: %(default)s)"
    )
    bench.add_argument("--json", action="store_true", help="print report.json")
    bench.set_defaults(run=_cmd_bench)
    add_deploy_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
        return code
    except RecaccelError as exc:
        errors.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        if exc.hint:
            errors.print(f"Hint: {escape(exc.hint)}", highlight=False)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
