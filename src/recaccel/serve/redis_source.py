"""A feature source in Redis: a request's user and candidates read from an online store.

Layout (docs/feature-sources.md): one hash per user and per item, one field per feature, each
value the encoded value the model takes, as text, as in a CSV feature table (data/tables.py):

    {namespace}:user:{user_id}   the request-side features    age "0.31"  user_id "7"
    {namespace}:item:{item_id}   the candidate-side features  price "1.5"  tags "3 17 42"

A dense feature's value is a float, a categorical's its index (0 to cardinality - 1), a
multi-hot's its indices separated by spaces. `write_tables` writes a users and an items table
so (`recaccel features push`); any pipeline of your own may write the same hashes.

Per request, rows held in the front's local cache (a TTL and a size bound) cost no round
trip; the rest are read with one HMGET per key, pipelined in one round trip, within the
request's budget. Redis down, slower than the budget, or holding a value the schema cannot
read: 503 with reason `feature_store` and a Retry-After (FeatureStoreError); a user or item
without a hash: 404, as for tables. Nothing waits past the budget.

The client is made on first use in the process that uses it: each front process (spawned
with this source pickled) has its own connections and its own cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
import redis.asyncio
from cachetools import TTLCache
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from recaccel.data.rows import Rows
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.data.tables import encoded_side, table_keys
from recaccel.errors import ConfigError
from recaccel.serve.config import RankSection
from recaccel.serve.errors import FeatureStoreError, NotFoundError, RequestError
from recaccel.serve.features import candidate_ids, describe_ids, user_id_of

ENTITIES = {Side.REQUEST: "user", Side.CANDIDATE: "item"}
_WRITE_BATCH = 1_000  # hashes per pipelined round trip when writing tables


def entity_key(namespace: str, side: Side, entity_id: int) -> str:
    """The hash holding one user's (request side) or item's (candidate side) features."""
    return f"{namespace}:{ENTITIES[side]}:{entity_id}"


def side_features(schema: FeatureSchema, side: Side) -> list[Feature]:
    return [f for f in schema.features if f.side is side]


@dataclass(frozen=True)
class _Row:
    """One entity's share of a model row: its side's columns set, every other column 0."""

    dense: np.ndarray
    categorical: np.ndarray
    multi_hot: np.ndarray


class RedisSource:
    """Rows for (user, candidates) from Redis hashes (module docstring).

    Args:
        schema: the served model's features, each with its side.
        rank: the server's rank section: `redis` (URL), its namespace, budget and cache.
    """

    def __init__(self, schema: FeatureSchema, rank: RankSection) -> None:
        if not rank.redis:
            raise ConfigError("a Redis feature source needs rank.redis, the store's URL")
        self.schema: FeatureSchema | None = schema
        self.max_candidates = rank.max_candidates
        self._rank = rank
        self._fields = {side: [f.name for f in side_features(schema, side)] for side in Side}
        self._catalogues: dict[Side, np.ndarray] = {}
        self._client: redis.asyncio.Redis | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._cache: TTLCache[tuple[Side, int], _Row] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into each front process without a client or a cache: each makes its own."""
        return {**self.__dict__, "_client": None, "_client_loop": None, "_cache": None}

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id with a hash, sorted: read once with SCAN (for `bench`'s requests;
        serving never needs it)."""
        return self._ids(Side.CANDIDATE)

    @property
    def user_ids(self) -> np.ndarray:
        return self._ids(Side.REQUEST)

    def _ids(self, side: Side) -> np.ndarray:
        if side not in self._catalogues:
            prefix = entity_key(self._rank.redis_namespace, side, 0)[:-1].encode()
            try:
                with redis.Redis.from_url(self._rank.redis) as client:
                    keys = client.scan_iter(match=prefix + b"*", count=10_000)
                    ids = sorted(int(key[len(prefix) :]) for key in keys)
            except RedisError as error:
                raise FeatureStoreError(f"Redis at {self._rank.redis} failed: {error}") from None
            self._catalogues[side] = np.asarray(ids, dtype=np.int64)
        return self._catalogues[side]

    async def fetch(
        self,
        user_id: int,
        item_ids: Sequence[int] | np.ndarray | None = None,
        raw: Mapping[str, object] | None = None,
    ) -> tuple[Rows, np.ndarray]:
        """The model input for `user_id` against each candidate, and the candidates' ids.

        Raises RequestError (400, 413), NotFoundError (404) or FeatureStoreError (503)."""
        if raw:
            raise RequestError(
                "this server's features come from Redis: it takes no raw feature values",
                'leave out "features"',
            )
        if item_ids is None:
            raise RequestError(
                "this server reads items from Redis, one key per candidate: send candidates",
                'e.g. "candidates": [1, 50, 181]',
            )
        user = user_id_of(user_id)
        ids = candidate_ids(item_ids, self.max_candidates)
        wanted = [(Side.CANDIDATE, i) for i in ids.tolist()]
        if self._fields[Side.REQUEST]:  # a model with no request-side feature reads no user
            wanted.append((Side.REQUEST, user))
        found = await self._rows(wanted)
        if (Side.REQUEST, user) not in found and self._fields[Side.REQUEST]:
            raise NotFoundError(
                f"unknown user {user}",
                f"write its hash, {entity_key(self._rank.redis_namespace, Side.REQUEST, user)}",
            )
        unknown = [i for side, i in wanted if side is Side.CANDIDATE and (side, i) not in found]
        if unknown:
            raise NotFoundError(
                f"{len(unknown)} unknown item id(s): {describe_ids(np.asarray(unknown))}",
                f"each item's features live at {self._rank.redis_namespace}:item:{{item_id}}",
            )
        items = [found[(Side.CANDIDATE, i)] for i in ids.tolist()]
        dense = np.stack([r.dense for r in items])
        categorical = np.stack([r.categorical for r in items])
        multi_hot = np.stack([r.multi_hot for r in items])
        user_row = found.get((Side.REQUEST, user))
        if user_row is not None:  # the user's columns added to each candidate's (theirs are 0)
            dense += user_row.dense
            categorical += user_row.categorical
            multi_hot += user_row.multi_hot
        return Rows(dense, categorical, multi_hot), ids

    async def _rows(self, wanted: list[tuple[Side, int]]) -> dict[tuple[Side, int], _Row]:
        """Each wanted entity's row, from the cache or Redis; absent: no hash in Redis."""
        cache = self._local_cache()
        found: dict[tuple[Side, int], _Row] = {}
        missing = []
        for key in wanted:
            row = cache.get(key) if cache is not None else None
            if row is None:
                missing.append(key)
            else:
                found[key] = row
        if missing:
            fetched = self._decode(missing, await self._read(missing))
            found.update(fetched)
            if cache is not None:
                cache.update(fetched)
        return found

    def _local_cache(self) -> TTLCache[tuple[Side, int], _Row] | None:
        rank = self._rank
        if rank.redis_cache_ttl_s <= 0 or rank.redis_cache_rows <= 0:
            return None
        if self._cache is None:
            self._cache = TTLCache(maxsize=rank.redis_cache_rows, ttl=rank.redis_cache_ttl_s)
        return self._cache

    async def _read(self, keys: list[tuple[Side, int]]) -> list[list[bytes | None]]:
        """HMGET of each key's side's fields, in one pipelined round trip within the budget."""
        rank = self._rank
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:  # a client per event loop
            self._client_loop = loop
            budget_s = rank.redis_budget_ms / 1e3
            # No retries inside the client: the budget is the request's, and the next request
            # tries again. Its own timeouts only back up the budget's.
            self._client = redis.asyncio.Redis.from_url(
                rank.redis,
                socket_timeout=budget_s,
                socket_connect_timeout=budget_s,
                retry=Retry(NoBackoff(), 0),
            )
        namespace, fields = rank.redis_namespace, self._fields
        try:
            async with asyncio.timeout(rank.redis_budget_ms / 1e3):
                async with self._client.pipeline(transaction=False) as pipe:
                    for side, entity in keys:
                        pipe.hmget(entity_key(namespace, side, entity), fields[side])
                    values: list[list[bytes | None]] = await pipe.execute()
        except TimeoutError:
            raise FeatureStoreError(
                f"Redis at {rank.redis} did not answer {len(keys)} reads within "
                f"rank.redis_budget_ms = {rank.redis_budget_ms:g}",
                "check the store's load and network, or raise the budget",
            ) from None
        except (RedisError, OSError) as error:
            raise FeatureStoreError(f"Redis at {rank.redis} failed: {error}") from None
        return values

    def _decode(
        self, keys: list[tuple[Side, int]], values: list[list[bytes | None]]
    ) -> dict[tuple[Side, int], _Row]:
        """The rows of the keys that have a hash, decoded and checked per side by the code
        that reads feature tables (data/tables.py), so Redis and Parquet agree value for value;
        FeatureStoreError naming the hash that lacks a field or holds a value the schema
        refuses."""
        out: dict[tuple[Side, int], _Row] = {}
        for side in Side:
            present = [
                (key, row)
                for key, row in zip(keys, values, strict=True)
                if key[0] is side and any(v is not None for v in row)
            ]
            if not present:
                continue
            where = f"Redis {ENTITIES[side]} hashes"
            try:
                rows = self._encoded(side, [row for _, row in present], where)
            except ConfigError as error:
                fault = self._hash_at_fault(side, present) or error
                raise FeatureStoreError(fault.message, fault.hint) from None
            for at, (key, _) in enumerate(present):
                out[key] = _Row(rows.dense[at], rows.categorical[at], rows.multi_hot[at])
        return out

    def _hash_at_fault(
        self, side: Side, present: list[tuple[tuple[Side, int], list[bytes | None]]]
    ) -> ConfigError | None:
        """The first hash's own error, found hash by hash (on the error path only) so that
        the message names the key to fix."""
        for (_, entity), row in present:
            where = f"Redis hash {entity_key(self._rank.redis_namespace, side, entity)}"
            try:
                self._encoded(side, [row], where)
            except ConfigError as error:
                return error
        return None

    def _encoded(self, side: Side, hashes: list[list[bytes | None]], where: str) -> Rows:
        """The side's features of each hash (its fields' values, in the side's feature order)
        as model rows; ConfigError for a missing field or a value the schema refuses."""
        schema = self.schema
        assert schema is not None  # set at construction; Optional only in the protocol
        arrays = {}
        for column, name in enumerate(self._fields[side]):
            texts = [fields[column] for fields in hashes]
            if any(t is None for t in texts):
                raise ConfigError(
                    f"{where} has no field {name!r}",
                    "write every feature of the entity (recaccel features push)",
                )
            kind = schema[name].kind
            text = pa.array(texts, type=pa.binary()).cast(pa.string())
            try:
                if kind is FeatureKind.DENSE:
                    arrays[name] = pc.cast(text, pa.float32())
                elif kind is FeatureKind.CATEGORICAL:
                    arrays[name] = pc.cast(text, pa.int64())
                else:
                    arrays[name] = text  # a bag: "3 17 42", split by the table reader
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ConfigError(
                    f"{where}: field {name!r} ({kind.value}) holds {texts[0]!r}"
                    if len(texts) == 1
                    else f"{where}: field {name!r} ({kind.value}) holds a value that is not one",
                    "write the encoded value as text (docs/feature-sources.md)",
                ) from None
        return encoded_side(schema, side, pa.table(arrays), where)


def _encode_rows(schema: FeatureSchema, side: Side, table: pa.Table) -> Iterator[dict[str, str]]:
    """Each row of a side's table as its hash: feature name -> encoded value as text."""
    rows = encoded_side(schema, side, table, ENTITIES[side] + "s")  # checked as tables are
    columns = []
    for feature in side_features(schema, side):
        column = schema.of_kind(feature.kind).index(feature)
        if feature.kind is FeatureKind.DENSE:
            columns.append((feature.name, [repr(v) for v in rows.dense[:, column].tolist()]))
        elif feature.kind is FeatureKind.CATEGORICAL:
            columns.append((feature.name, [str(v) for v in rows.categorical[:, column].tolist()]))
        else:
            bags = rows.multi_hot[:, column, :].tolist()
            columns.append((feature.name, [" ".join(str(i) for i in bag if i) for bag in bags]))
    for at in range(table.num_rows):
        yield {name: values[at] for name, values in columns}


def write_tables(
    schema: FeatureSchema, users: pa.Table, items: pa.Table, url: str, namespace: str
) -> dict[str, int]:
    """Write a users and an items table into Redis in the layout `RedisSource` reads (module
    docstring), checked as the table source checks them; how many hashes of each were
    written. Keys already there are overwritten; keys of ids not in the tables are left."""
    hashes = {  # both tables checked before anything is written
        side: list(
            zip(
                table_keys(table, side, ENTITIES[side] + "s").tolist(),
                _encode_rows(schema, side, table) if side_features(schema, side) else [],
                strict=False,
            )
        )
        for side, table in ((Side.REQUEST, users), (Side.CANDIDATE, items))
    }
    try:
        with redis.Redis.from_url(url) as client:
            pipe = client.pipeline(transaction=False)
            for side, rows in hashes.items():
                for at, (entity, mapping) in enumerate(rows, start=1):
                    pipe.hset(entity_key(namespace, side, entity), mapping=mapping)
                    if at % _WRITE_BATCH == 0:
                        pipe.execute()
            pipe.execute()
    except RedisError as error:
        raise ConfigError(f"Redis at {url} failed: {error}", "is the server up?") from None
    return {ENTITIES[side] + "s": len(rows) for side, rows in hashes.items()}
