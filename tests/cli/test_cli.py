"""The CLI wraps the API: it trains and inspects, and bad input gets a message, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recaccel import cli
from recaccel.data import registry
from recaccel.data.dataset import Dataset
from recaccel.data.movielens_source import MovieLensTables


@pytest.fixture
def tiny_movielens(monkeypatch: pytest.MonkeyPatch, tiny_dataset: Dataset) -> None:
    """Serve the in-memory fixture under the real dataset name: no network in unit tests."""
    monkeypatch.setitem(registry.DATASETS, "movielens-100k", lambda options: tiny_dataset)


def test_train_then_inspect(
    tiny_movielens: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dlrm"
    code = cli.main(
        [
            "train",
            "--model",
            "dlrm",
            "--preset",
            "small",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"][0]["artifact"] == str(out)
    assert {b["name"] for b in report["baselines"]} == {"logistic_regression", "popularity"}
    delta = report["models"][0]["delta_test_auc_vs"]["logistic_regression"]
    assert delta["low"] <= delta["delta"] <= delta["high"]
    assert cli.main(["inspect", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (
        manifest["model"] == "dlrm"
        and manifest["metrics"]["test"]["auc"] == report["models"][0]["test"]["auc"]
    )
    assert manifest["references"]["logistic_regression"]["test"]["auc"] > 0
    assert cli.main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "dlrm (preset small)" in shown and "95% CI" in shown


def test_train_several_models_into_one_parent(
    tiny_movielens: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "train",
            "--model",
            "dlrm,wide_deep",
            "--preset",
            "small",
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--no-baselines",
        ]
    )
    assert code == 0
    assert (tmp_path / "dlrm-small" / "manifest.json").is_file()
    assert (tmp_path / "wide_deep-small" / "manifest.json").is_file()
    assert "test AUC" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "dlrn", "--out", "x"], "unknown model 'dlrn'"),
        (["train", "--preset", "huge", "--out", "x"], "unknown preset for dlrm 'huge'"),
        (["train", "--dataset", "ml-1b", "--out", "x"], "unknown dataset 'ml-1b'"),
        (["train", "--epochs", "-1", "--out", "x"], "max_epochs must be >= 0"),
        (["train", "--rows", "10", "--out", "x"], "--rows applies to criteo-synthetic only"),
        (["inspect", "/nonexistent/artifact"], "no artifact at /nonexistent/artifact"),
    ],
)
def test_bad_input_gets_a_message_and_a_hint(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("verb", ["data", "train", "inspect"])
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([verb, "--help"])
    assert exit_.value.code == 0
    assert "usage: recaccel" in capsys.readouterr().out


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recaccel.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "train" in result.stdout


class _Unreachable:
    name = "offline"

    def fetch(self, workdir: Path, progress: bool) -> object:
        from recaccel.errors import DataSourceError

        raise DataSourceError("cannot reach the network")


def test_no_source_and_no_cache_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recaccel.data import movielens_source

    monkeypatch.setenv("RECACCEL_HOME", str(tmp_path))
    monkeypatch.setattr(movielens_source, "default_sources", lambda home: (_Unreachable(),))
    assert cli.main(["train", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "Hint:" in err and "Traceback" not in err


def test_corrupt_cache_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_tables: MovieLensTables,
) -> None:
    from recaccel.data import movielens_source

    monkeypatch.setenv("RECACCEL_HOME", str(tmp_path))
    tables = tiny_tables

    class _Fixture:
        name = "fixture"

        def fetch(self, workdir: Path, progress: bool) -> object:
            return tables

    counts = movielens_source.ExpectedCounts(
        len(tables.ratings), len(tables.users), len(tables.items)
    )
    movielens_source.load_movielens_100k(tmp_path, sources=[_Fixture()], expected_counts=counts)
    ratings = movielens_source.cache_dir(tmp_path) / "ratings.parquet"
    ratings.write_bytes(ratings.read_bytes()[:-64])
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err
    assert (
        "ratings.parquet" in err and "delete the cache directory" in err and "Traceback" not in err
    )


def test_optimize_runs_a_recipe_file_and_prints_the_report(
    tiny_movielens: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "teacher"
    assert cli.main(["train", "--model", "dlrm", "--preset", "base", "--out", str(teacher),
                     "--epochs", "1", "--no-baselines", "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        "[guard]\nrelative_budget = 0.5\nmax_slowdown = 1000\n[measure]\nrepeats = 3\n"
        '[[step]]\nop = "quantize_embeddings"\nbits = 8\n'
    )
    out = tmp_path / "opt"
    code = cli.main(
        ["optimize", str(teacher), "--recipe", str(recipe), "--out", str(out), "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in report["variants"]] == ["original", "01-quantize_embeddings"]
    assert report["final"] == str(out / "01-quantize_embeddings")
    assert (out / "report.md").is_file()
    assert cli.main(["optimize", str(teacher), "--recipe", str(recipe), "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "01-quantize_embeddings" in shown and "kept" in shown


def test_optimize_with_an_unknown_recipe_says_which_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["optimize", str(tmp_path), "--recipe", "fastest", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'fastest'" in err and "default" in err


def test_the_optimize_help_names_every_builtin_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    from recaccel.optimize.recipe import builtin_recipes

    with pytest.raises(SystemExit):
        cli.main(["optimize", "--help"])
    help_text = capsys.readouterr().out
    for name in builtin_recipes():
        assert name in help_text


def test_the_cli_parses_without_importing_torch() -> None:
    """`recaccel --help` and a mistyped flag answer at once: the verbs import their stages
    (and torch, about a second) only when they run."""
    code = "import sys, recaccel.cli as cli; cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
