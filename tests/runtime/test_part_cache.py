"""The cross-request cache of request parts (runtime/part_cache.py): a user seen again within
the TTL skips the request half and scores exactly as without the cache; a changed user, an
expired part, a full cache and a backend that runs the twin as one graph each behave as said."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recaccel.artifact import Artifact
from recaccel.data.dataset import Dataset
from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureSchema, Side
from recaccel.models.split import joined_rows
from recaccel.runtime.executor import ExecutorConfig, ExecutorError, load_executor
from recaccel.runtime.part_cache import CacheCounts, PartCache, PartCacheSettings, RequestRows


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _request_rows(dataset: Dataset, users: list[int]) -> RequestRows:
    """One request row per entry of `users`, the test row at that index's columns."""
    batch = dataset.test.features(slice(0, max(users) + 1)).as_tuple()
    dense, categorical, multi_hot = (t.numpy()[users] for t in batch)
    return dense, categorical, multi_hot


class Recorder:
    """A request half that records which rows it was asked for; part = first dense column
    repeated, so a part tells whose it is."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.calls: list[int] = []

    def __call__(self, rows: RequestRows) -> np.ndarray:
        self.calls.append(len(rows[0]))
        tag = rows[1][:, 0].astype(np.float32)  # a categorical id: distinct per user here
        return np.repeat(tag[:, None], self.width, axis=1)


def test_a_repeated_request_row_is_a_hit_with_the_part_computed_before(
    tiny_dataset: Dataset,
) -> None:
    clock = Clock()
    cache = PartCache(tiny_dataset.schema, PartCacheSettings(60, 100), width=3, clock=clock)
    half = Recorder(3)
    rows = _request_rows(tiny_dataset, [0, 1, 0])  # request 2 is request 0's user again
    parts, counts = cache.parts(rows, half)
    assert half.calls == [2]  # the two distinct users, once each
    assert counts == CacheCounts(hits=0, misses=3)
    np.testing.assert_array_equal(parts[0], parts[2])
    clock.now += 10
    again, counts = cache.parts(_request_rows(tiny_dataset, [1, 0]), half)
    assert half.calls == [2]  # nothing computed
    assert counts.hits == 2 and counts.misses == 0
    assert counts.hit_age_s == pytest.approx(20.0)  # two parts, each 10 s old
    np.testing.assert_array_equal(again, parts[[1, 0]])


def test_a_part_past_its_ttl_is_computed_again_and_counted_expired(tiny_dataset: Dataset) -> None:
    clock = Clock()
    cache = PartCache(tiny_dataset.schema, PartCacheSettings(5, 100), width=2, clock=clock)
    half = Recorder(2)
    cache.parts(_request_rows(tiny_dataset, [0]), half)
    clock.now += 5
    _, counts = cache.parts(_request_rows(tiny_dataset, [0]), half)
    assert half.calls == [1, 1]
    assert counts == CacheCounts(hits=0, misses=1, expired=1)


def test_only_request_side_columns_make_the_key(tiny_dataset: Dataset) -> None:
    """Rows of one user differing in an item column are one key; a changed user column is
    another (its features changed, so its part must be computed again)."""
    schema: FeatureSchema = tiny_dataset.schema
    cache = PartCache(schema, PartCacheSettings(60, 100), width=1)
    dense, categorical, multi_hot = _request_rows(tiny_dataset, [0, 0])
    request_cat, candidate_cat = (
        schema.columns_on_side(side)[1] for side in (Side.REQUEST, Side.CANDIDATE)
    )
    assert request_cat and candidate_cat  # MovieLens marks both sides among its ids
    categorical[1, candidate_cat[0]] += 1
    same = cache.keys((dense, categorical, multi_hot))
    assert same[0] == same[1]
    categorical[1, request_cat[0]] += 1
    changed = cache.keys((dense, categorical, multi_hot))
    assert changed[0] != changed[1]


def test_a_full_cache_evicts_the_oldest_written_part(tiny_dataset: Dataset) -> None:
    cache = PartCache(tiny_dataset.schema, PartCacheSettings(60, 2), width=1, clock=Clock())
    half = Recorder(1)
    cache.parts(_request_rows(tiny_dataset, [0, 1]), half)
    _, counts = cache.parts(_request_rows(tiny_dataset, [2]), half)
    assert counts.evicted == 1 and len(cache) == 2
    _, counts = cache.parts(_request_rows(tiny_dataset, [1, 0]), half)
    assert (counts.hits, counts.misses) == (1, 1)  # user 0 went, user 1 stayed


@pytest.mark.parametrize("settings", [(0, 10), (10, 0), (-1, 10)])
def test_settings_that_cache_nothing_are_refused(settings: tuple[float, int]) -> None:
    from recaccel.errors import ConfigError

    with pytest.raises(ConfigError, match="ttl_s > 0 and max_entries >= 1"):
        PartCacheSettings(*settings)


def _requests_of(dataset: Dataset, users: list[int], per_request: int) -> Rows:
    """Rank requests of `per_request` test rows each, request i holding test row users[i]'s
    request-side columns."""
    n = per_request * len(users)
    candidates = dataset.test.features(slice(0, n)).as_tuple()
    request = tuple(t[users] for t in dataset.test.features(slice(0, max(users) + 1)).as_tuple())
    owner = torch.arange(n) // per_request
    rows = joined_rows(dataset.schema, request, candidates, owner)
    return Rows(*(t.numpy() for t in rows), np.full(len(users), per_request))


@pytest.mark.parametrize("backend", ["torch-eager", "onnxruntime"])
@pytest.mark.parametrize("family", ["deepfm", "dcnv2"])
def test_cached_parts_score_exactly_as_the_model_does(
    trained: dict[str, Artifact], tiny_dataset: Dataset, backend: str, family: str
) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    artifact = trained[family]
    first = _requests_of(tiny_dataset, [0, 1, 0], per_request=7)
    second = _requests_of(tiny_dataset, [1, 2], per_request=5)
    with load_executor(artifact.path, ExecutorConfig(backend)) as plain:
        expected = [plain.run(Rows(*rows.as_tuple())) for rows in (first, second)]
    with load_executor(artifact.path, ExecutorConfig(backend, reuse=True)) as split:
        assert split.describe()["part_cache"] is None
        split.use_part_cache(PartCacheSettings(60, 100))
        assert split.describe()["part_cache"] == {"ttl_s": 60, "max_entries": 100}
        got, counts = split.run_counted(first)
        np.testing.assert_allclose(got, expected[0], rtol=0, atol=1e-5)
        assert (counts.hits, counts.misses) == (0, 3)
        got, counts = split.run_counted(second)  # user 1 again, user 2 new
        np.testing.assert_allclose(got, expected[1], rtol=0, atol=1e-5)
        assert (counts.hits, counts.misses) == (1, 1)


def test_an_executor_without_reuse_refuses_the_cache(trained: dict[str, Artifact]) -> None:
    with (
        load_executor(trained["deepfm"].path, ExecutorConfig("torch-eager")) as plain,
        pytest.raises(ExecutorError, match="runs the model unsplit") as caught,
    ):
        plain.use_part_cache(PartCacheSettings(60, 100))
    assert "reuse" in caught.value.hint


def test_torch_aot_runs_the_twin_as_one_graph_so_it_refuses_the_cache(
    trained: dict[str, Artifact],
) -> None:
    """Its refusal, not a silent eager fallback: the package holds no halves to run apart."""
    config = ExecutorConfig("torch-aot", reuse=True)
    with (
        load_executor(trained["deepfm"].path, config) as split,
        pytest.raises(ExecutorError, match="as one graph") as caught,
    ):
        split.use_part_cache(PartCacheSettings(60, 100))
    assert "torch-eager, onnxruntime" in caught.value.hint
