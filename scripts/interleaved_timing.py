"""What timing a small model right after a large one does to its figure (optimize/latency.py).

    .venv/bin/python scripts/interleaved_timing.py STUDENT TEACHER [--backend onnxruntime]

The student is timed as the search with reuse times it (its split twin on one rank request) and
the teacher as it is, on MovieLens validation rows, one thread: interleaved with each call timed
(`block=1`, what the search and the optimize report did before), interleaved as they do now
(`MEASURE_BLOCK` calls in a row, the first untimed), and alone. Medians in µs.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from recaccel.artifact import load_artifact
from recaccel.data.registry import load_dataset
from recaccel.optimize.latency import MEASURE_BLOCK, measure_interleaved, sample_rows
from recaccel.runtime.trial_timing import SEARCH_TIMERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("student", type=Path)
    parser.add_argument("teacher", type=Path)
    parser.add_argument("--backend", default="onnxruntime", choices=sorted(SEARCH_TIMERS))
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    dataset = load_dataset("movielens-100k")
    timer = SEARCH_TIMERS[args.backend]
    student = timer(load_artifact(args.student).model, dataset.schema, True, 1)
    teacher = timer(load_artifact(args.teacher).model, dataset.schema, False, 1)
    print(f"# {platform.processor() or platform.machine()}, {args.backend}, one thread, µs\n")
    print("| rows | each call timed | block of 3, first untimed | alone | teacher |")
    print("|---:|---:|---:|---:|---:|")
    for rows in (100, 1000):
        batch = sample_rows(dataset.validation, rows)
        pair = {"teacher": teacher, "student": student}
        cold = measure_interleaved(pair, batch, args.repeats, 5, block=1)
        warm = measure_interleaved(pair, batch, args.repeats, 5, block=MEASURE_BLOCK)
        alone = measure_interleaved({"student": student}, batch, args.repeats, 5)
        print(
            f"| {rows:,} | {cold['student'].median_ms * 1e3:,.0f} "
            f"| {warm['student'].median_ms * 1e3:,.0f} | {alone['student'].median_ms * 1e3:,.0f} "
            f"| {warm['teacher'].median_ms * 1e3:,.0f} |"
        )


if __name__ == "__main__":
    main()
