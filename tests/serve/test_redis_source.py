"""Rank rows from a real Redis server (serve/redis_source.py): the same rows as the tables they
were written from, its refusals, its cache, and what a down or frozen store answers."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from redis_process import RedisProcess
from test_table_source import SCHEMA, items, users

from recaccel.data.rows import Rows
from recaccel.errors import ConfigError
from recaccel.serve.config import RankSection
from recaccel.serve.errors import (
    FeatureStoreError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
)
from recaccel.serve.redis_source import RedisSource, write_tables
from recaccel.serve.table_source import TableSource


def source_for(server: RedisProcess, **options: object) -> RedisSource:
    """A source of the tables written to `server`, under namespace "t"; a budget that a busy
    CI machine meets, unless `options` set one."""
    write_tables(SCHEMA, users(), items(), server.url, "t")
    rank = {"redis": server.url, "redis_namespace": "t", "redis_budget_ms": 2_000.0, **options}
    return RedisSource(SCHEMA, RankSection(**rank))  # type: ignore[arg-type]


def fetch(
    source: RedisSource, user: int, candidates: Sequence[int] | None, raw: dict | None = None
) -> tuple[Rows, np.ndarray]:
    return asyncio.run(source.fetch(user, candidates, raw))


def test_rows_from_redis_are_the_rows_of_the_tables_written_there(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server)
    tables = TableSource(SCHEMA, users(), items())
    for user, candidates in ((7, [9, 20]), (3, [4, 9, 20]), (1, [20])):
        got, ids = fetch(source, user, candidates)
        want, want_ids = tables.rows(user, candidates)
        np.testing.assert_array_equal(ids, want_ids)
        for a, b in zip(got.as_tuple(), want.as_tuple(), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    with redis_server.client() as client:
        client.hset("t:item:draft", "price", "1.0")  # a key of someone else's: not an id
    np.testing.assert_array_equal(source.catalogue, [4, 9, 20])
    np.testing.assert_array_equal(source.user_ids, [1, 3, 7])


def test_a_cache_smaller_than_a_request_still_gives_each_candidate_its_own_row(
    redis_server: RedisProcess,
) -> None:
    """Two rows held, three asked: the row read for 20 takes the slot of 4, a hit of the same
    request, which must already have been taken."""
    source = source_for(redis_server, redis_cache_rows=2)
    tables = TableSource(SCHEMA, users(), items())
    for candidates in ([4, 9], [4, 9, 20], [20, 4, 9], [9]):
        got, _ = fetch(source, 7, candidates)
        want, _ = tables.rows(7, candidates)
        for a, b in zip(got.as_tuple(), want.as_tuple(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_request_redis_cannot_answer_is_refused_with_its_status(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server, max_candidates=2)
    with pytest.raises(NotFoundError, match="unknown user 5") as error:
        fetch(source, 5, [4])
    assert "t:user:5" in error.value.hint
    with pytest.raises(NotFoundError, match=r"unknown item id.*: 8"):
        fetch(source, 3, [4, 8])
    with pytest.raises(PayloadTooLargeError):
        fetch(source, 3, [4, 9, 20])
    with pytest.raises(RequestError, match="no raw feature values"):
        fetch(source, 3, [4], {"age": 30})
    with pytest.raises(RequestError, match="send candidates"):
        fetch(source, 3, None)


def test_cached_rows_answer_without_redis_until_their_ttl_ends(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server, redis_cache_ttl_s=0.5)

    async def scenario() -> None:  # one event loop, as in a front process
        before, _ = await source.fetch(7, [9, 20])
        redis_server.stop()
        cached, _ = await source.fetch(7, [20, 9])  # same user and items: no round trip
        np.testing.assert_array_equal(cached.dense, before.dense[::-1])
        with pytest.raises(FeatureStoreError):  # an item not read before needs Redis
            await source.fetch(7, [4])
        await asyncio.sleep(0.6)
        with pytest.raises(FeatureStoreError):  # expired: read again, and Redis is gone
            await source.fetch(7, [9, 20])

    asyncio.run(scenario())


def test_redis_down_is_a_feature_store_503_and_serving_recovers_when_it_returns(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server, redis_cache_ttl_s=0)

    async def scenario() -> None:
        await source.fetch(7, [9])  # connected
        redis_server.stop()
        with pytest.raises(FeatureStoreError) as error:
            await source.fetch(7, [9])
        assert error.value.status == 503 and error.value.code == "feature_store"
        assert error.value.retry_after_s > 0 and redis_server.url in error.value.message
        redis_server.start()  # back, on the same port, empty: written again
        write_tables(SCHEMA, users(), items(), redis_server.url, "t")
        rows, _ = await source.fetch(7, [9])
        assert rows.categorical[0].tolist() == [7, 9]

    asyncio.run(scenario())


def test_a_frozen_redis_is_a_feature_store_503_after_the_budget_not_a_hang(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server, redis_cache_ttl_s=0, redis_budget_ms=50)

    async def scenario() -> float:
        await source.fetch(7, [9])
        redis_server.pause()
        start = time.monotonic()
        try:
            with pytest.raises(FeatureStoreError, match=r"within rank\.redis_budget_ms = 50"):
                await source.fetch(7, [9])
            return time.monotonic() - start
        finally:
            redis_server.resume()

    waited = asyncio.run(scenario())
    assert waited < 5.0  # the 50 ms budget, not the client's or the kernel's timeouts
    asyncio.run(source.fetch(7, [9]))  # and it answers again once Redis does


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("price", None, "t:item:9 has no field 'price'"),
        ("price", "cheap", r"t:item:9: field 'price' \(dense\) holds b'cheap'"),
        ("item_id", "21", r"t:item:9 column 'item_id' has 1 index\(es\) outside 0\.\.20"),
        ("tags", "1 x", "t:item:9 column 'tags' row 0 is '1 x'"),
    ],
)
def test_a_hash_the_schema_cannot_read_is_a_feature_store_503_naming_it(
    redis_server: RedisProcess, field: str, value: str | None, problem: str
) -> None:
    source = source_for(redis_server, redis_cache_ttl_s=0)
    with redis_server.client() as client:
        if value is None:
            client.hdel("t:item:9", field)
        else:
            client.hset("t:item:9", field, value)
    with pytest.raises(FeatureStoreError, match=problem):
        fetch(source, 7, [4, 9])
    fetch(source, 7, [4, 20])  # the other hashes still serve


def test_a_source_pickled_into_a_front_process_connects_there(
    redis_server: RedisProcess,
) -> None:
    source = source_for(redis_server)
    fetch(source, 7, [9])  # a client and a cache in this process
    copy = pickle.loads(pickle.dumps(source))
    assert copy._client is None and copy._cache is None
    rows, _ = fetch(copy, 3, [20])
    assert rows.categorical[0].tolist() == [3, 20]


def test_writing_tables_checks_them_as_the_table_source_does(redis_server: RedisProcess) -> None:
    bad = items().set_column(1, "price", pa.array([1.0, float("nan"), 2.0]))
    with pytest.raises(ConfigError, match=r"'price' .* non-numbers"):
        write_tables(SCHEMA, users(), bad, redis_server.url, "t")
    with redis_server.client() as client:
        assert client.dbsize() == 0  # both tables checked before anything is written
    counts = write_tables(SCHEMA, users(), items(), redis_server.url, "t")
    assert counts == {"users": 3, "items": 3}
    with redis_server.client() as client:
        assert client.hgetall("t:item:9") == {
            b"price": b"-0.75",
            b"item_id": b"9",
            b"tags": b"5 4 3",
        }
        assert client.hgetall("t:user:7") == {b"user_id": b"7", b"age": b"-1.0"}


def test_an_unreachable_redis_is_a_clear_error_for_the_writer_too() -> None:
    with pytest.raises(ConfigError, match=r"Redis at redis://127\.0\.0\.1:1/0 failed"):
        write_tables(SCHEMA, users(), items(), "redis://127.0.0.1:1/0", "t")
