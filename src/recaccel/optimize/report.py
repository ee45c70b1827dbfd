"""The optimization report: each kept variant's size, speed and accuracy, and every decision.

Speed is measured here, once, for all variants together: each is loaded from its artifact (so
what is timed is what will be served) and timed interleaved with the others in the same rounds,
at batch 1 and at the serving batch. Accuracy on the test split is reported with a paired
bootstrap 95% interval against the original — it is read, never used to decide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recaccel.artifact import Artifact, load_artifact
from recaccel.data.dataset import Dataset
from recaccel.machine import describe_machine
from recaccel.optimize.latency import LatencyStats, measure_interleaved, sample_rows
from recaccel.optimize.pipeline import RecipeRun
from recaccel.train.metrics import AucDelta, Metrics, evaluate, paired_bootstrap_auc_delta
from recaccel.train.trainer import predict

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    model: str
    lineage: str
    parameters: int
    weights_bytes: int
    resident_bytes: int
    latency_batch1: LatencyStats
    latency_serving: LatencyStats
    validation: Metrics
    test: Metrics
    delta_vs_original: AucDelta | None  # None for the original itself
    size_ratio: float  # original bytes on disk / this variant's
    speedup: float  # original median latency / this variant's, at the serving batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "model": self.model,
            "lineage": self.lineage,
            "parameters": self.parameters,
            "weights_bytes": self.weights_bytes,
            "resident_bytes": self.resident_bytes,
            "latency_batch1": self.latency_batch1.to_dict(),
            "latency_serving": self.latency_serving.to_dict(),
            "throughput_rows_per_second": round(self.latency_serving.rows_per_second, 1),
            "validation": self.validation.to_dict(),
            "test": self.test.to_dict(),
            "delta_test_auc_vs_original": (
                self.delta_vs_original.to_dict() if self.delta_vs_original else None
            ),
            "size_ratio": round(self.size_ratio, 2),
            "speedup_serving_batch": round(self.speedup, 2),
        }


@dataclass(frozen=True)
class OptimizeReport:
    recipe: str
    dataset: str
    synthetic: bool
    relative_budget: float
    serving_batch: int
    machine: dict[str, Any]  # recaccel.machine's description, plus the threads measured on
    variants: list[Variant]
    decisions: list[dict[str, Any]]
    final: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "dataset": self.dataset,
            "synthetic": self.synthetic,
            "relative_budget": self.relative_budget,
            "serving_batch": self.serving_batch,
            "machine": self.machine,
            "final": str(self.final),
            "variants": [v.to_dict() for v in self.variants],
            "decisions": self.decisions,
        }

    def to_markdown(self) -> str:
        batch = self.serving_batch
        lines = [
            f"# recaccel optimize: recipe `{self.recipe}` on {self.dataset}",
            "",
            f"Machine: {self.machine['cpu']}, {self.machine['threads']} thread(s) measured, "
            f"torch {self.machine['versions']['torch']} ({self.machine['cpu_capability']}).",
            f"Accuracy guard: validation AUC ≥ (1 − {self.relative_budget:.2%}) × the original's.",
        ]
        if self.synthetic:
            lines.append("**Synthetic labels: the AUCs below mean nothing about accuracy.**")
        lines += [
            "",
            f"| variant | model | params | bytes on disk | resident | ms @1 | ms @{batch} "
            f"| rows/s @{batch} | speedup | smaller | val AUC | test AUC | test logloss "
            "| test ΔAUC vs original [95% CI] |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for v in self.variants:
            delta = str(v.delta_vs_original) if v.delta_vs_original else "—"
            lines.append(
                f"| {v.name} | {v.model} | {v.parameters:,} | {v.weights_bytes:,} "
                f"| {v.resident_bytes:,} | {v.latency_batch1.median_ms:.3f} "
                f"| {v.latency_serving.median_ms:.3f} | {v.latency_serving.rows_per_second:,.0f} "
                f"| {v.speedup:.2f}x | {v.size_ratio:.2f}x | {v.validation.auc:.4f} "
                f"| {v.test.auc:.4f} | {v.test.logloss:.4f} | {delta} |"
            )
        lines += [
            "",
            "## Decisions",
            "",
            "| step | attempt | decision | why |",
            "|---|---|---|---|",
        ]
        for d in self.decisions:
            lines.append(f"| {d['step']} | {d['attempt']} | {d['decision']} | {d['reason']} |")
        lines += ["", f"Final artifact: `{self.final}`", ""]
        return "\n".join(lines)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / REPORT_MARKDOWN).write_text(self.to_markdown())


def _decisions(run: RecipeRun) -> list[dict[str, Any]]:
    rows = []
    for outcome in run.steps:
        step = run.recipe.steps[outcome.step - 1]
        for attempt in outcome.attempts:
            decision = "kept" if attempt.accepted else "rejected"
            rows.append(
                {
                    "label": attempt.label,
                    "step": f"{outcome.step} {outcome.op} ({outcome.decision})",
                    "attempt": step.describe(attempt.params),
                    "decision": decision,
                    "reason": attempt.reason,
                    "path": str(attempt.candidate.path) if attempt.candidate else None,
                    "validation_auc": (
                        attempt.candidate.validation.auc if attempt.candidate else None
                    ),
                    "test_auc": attempt.candidate.test.auc if attempt.candidate else None,
                }
            )
    return rows


def build_report(run: RecipeRun, dataset: Dataset) -> OptimizeReport:
    """Measure the original and every kept variant together, and describe every decision."""
    named: dict[str, Artifact] = {"original": load_artifact(run.original)}
    for attempt in run.chain:
        assert attempt.candidate is not None  # accepted attempts always produced a model
        named[attempt.label] = load_artifact(attempt.candidate.path)
    measure = run.recipe.measure
    scorers = {name: a.model for name, a in named.items()}
    at_one = measure_interleaved(
        scorers, sample_rows(dataset.validation, 1), measure.repeats, threads=measure.threads
    )
    at_serving = measure_interleaved(
        scorers,
        sample_rows(dataset.validation, measure.serving_batch),
        measure.repeats,
        threads=measure.threads,
    )
    test_scores = {name: predict(a.model, dataset.test) for name, a in named.items()}
    original = named["original"]
    variants = []
    for name, artifact in named.items():
        manifest = artifact.manifest
        scores = test_scores[name]
        delta = (
            None
            if name == "original"
            else paired_bootstrap_auc_delta(dataset.test.label, scores, test_scores["original"])
        )
        variants.append(
            Variant(
                name=name,
                path=artifact.path,
                model=manifest.model,
                lineage=" → ".join(step.op for step in manifest.lineage),
                parameters=manifest.parameters,
                weights_bytes=manifest.weights_bytes,
                resident_bytes=manifest.resident_bytes,
                latency_batch1=at_one[name],
                latency_serving=at_serving[name],
                validation=evaluate(
                    dataset.validation.label, predict(artifact.model, dataset.validation)
                ),
                test=evaluate(dataset.test.label, scores),
                delta_vs_original=delta,
                size_ratio=original.manifest.weights_bytes / max(manifest.weights_bytes, 1),
                speedup=at_serving["original"].median_ms / at_serving[name].median_ms,
            )
        )
    return OptimizeReport(
        recipe=run.recipe.name,
        dataset=dataset.name,
        synthetic=run.synthetic,
        relative_budget=run.recipe.relative_budget,
        serving_batch=measure.serving_batch,
        machine={**describe_machine(), "threads": measure.threads},
        variants=variants,
        decisions=_decisions(run),
        final=run.final,
    )
