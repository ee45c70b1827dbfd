"""A feature source in Redis: a request's user and candidates read from an online store.

Layout (docs/feature-sources.md): one hash per user and per item, one field per feature, each
value the encoded value the model takes, as text, as in a CSV feature table (data/tables.py):

    {namespace}:user:{user_id}   the request-side features    age "0.31"  user_id "7"
    {namespace}:item:{item_id}   the candidate-side features  price "1.5"  tags "3 17 42"

A dense feature's value is a float, a categorical's its index (0 to cardinality - 1), a
multi-hot's its indices separated by spaces. `write_tables` writes a users and an items table
so (`recaccel features push`); any pipeline of your own may write the same hashes.

Per request, rows held in the front's local cache (a TTL and a size bound, row_cache.py) cost
no round trip; the rest are read by one command (a script of one HMGET per key) in one round
trip, within the request's budget. Redis down, slower than the budget, or holding a value the
schema cannot read: 503 with reason `feature_store` and a Retry-After (FeatureStoreError); a
user or item without a hash: 404, as for tables. Nothing waits past the budget.

The client is made on first use in the process that uses it: each front process (spawned
with this source pickled) has its own connections and its own cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from recaccel.data.rows import Rows
from recaccel.data.schema import FeatureKind, FeatureSchema, Side
from recaccel.data.tables import encoded_side, table_keys
from recaccel.errors import ConfigError
from recaccel.serve.config import RankSection
from recaccel.serve.errors import FeatureStoreError, NotFoundError, RequestError
from recaccel.serve.features import candidate_ids, describe_ids, user_id_of
from recaccel.serve.row_cache import RowCache

ENTITIES = {Side.REQUEST: "user", Side.CANDIDATE: "item"}
_WRITE_BATCH = 1_000  # hashes per pipelined round trip when writing tables

# One command for a request's reads: HMGET of each key's fields, users first, in Redis. A
# pipeline of one HMGET per key cost redis-py about 50 µs of Python per command (packing and
# parsing each; 6 ms for 100 candidates on the 2-core AMD EPYC); one script call packs once
# and hiredis parses the nested reply in C. KEYS: the users' keys, then the items';
# ARGV: how many users, how many user fields, the user fields, the item fields.
_READ_SCRIPT = """
local users, user_fields = tonumber(ARGV[1]), tonumber(ARGV[2])
local of_user = {unpack(ARGV, 3, 2 + user_fields)}
local of_item = {unpack(ARGV, 3 + user_fields, #ARGV)}
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(i <= users and of_user or of_item))
end
return out
"""


def entity_key(namespace: str, side: Side, entity_id: int) -> str:
    """The hash holding one user's (request side) or item's (candidate side) features."""
    return f"{namespace}:{ENTITIES[side]}:{entity_id}"


class RedisSource:
    """Rows for (user, candidates) from Redis hashes (module docstring).

    Args:
        schema: the served model's features, each with its side.
        rank: the server's rank section: `redis` (URL), its namespace, budget and cache.
    """

    raw_schema: Mapping[str, Any] = MappingProxyType({})  # takes no raw values

    remote = True

    def __init__(self, schema: FeatureSchema, rank: RankSection) -> None:
        if not rank.redis:
            raise ConfigError("a Redis feature source needs rank.redis, the store's URL")
        self.schema: FeatureSchema | None = schema
        self.max_candidates = rank.max_candidates
        self._rank = rank
        self._fields = {side: [f.name for f in schema.on_side(side)] for side in Side}
        self._catalogues: dict[Side, np.ndarray] = {}
        self._client: redis.asyncio.Redis | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None  # _READ_SCRIPT, registered with the client
        self._cache: tuple[RowCache, RowCache] | None = None  # users', items'
        self._no_hash = {side: [None] * len(self._fields[side]) for side in Side}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into each front process without a client or a cache: each makes its own."""
        unmade = {"_client": None, "_client_loop": None, "_script": None, "_cache": None}
        return {**self.__dict__, **unmade}

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
                    tails = (key[len(prefix) :] for key in keys)
                    ids = sorted(int(t) for t in tails if t.lstrip(b"-").isdigit())
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
        items = ids.tolist()
        now = time.monotonic()
        users_cache, items_cache = self._caches()
        slots = items_cache.find(items, now) if items_cache else np.full(len(items), -1)
        unread = [i for i, slot in zip(items, slots.tolist(), strict=True) if slot < 0]
        hit = slots >= 0
        # Taken before the read: writing what it reads may reuse the hits' slots.
        cached = items_cache.take(slots[hit]) if items_cache and hit.any() else None
        user_row = None
        if self._fields[Side.REQUEST]:  # a model with no request-side feature reads no user
            slot = users_cache.find([user], now) if users_cache else np.full(1, -1)
            user_row = users_cache.take(slot) if users_cache and slot[0] >= 0 else None
        read_user = [user] if self._fields[Side.REQUEST] and user_row is None else []
        fresh = None
        if read_user or unread:
            user_hashes, item_hashes = await self._read(read_user, unread)
            if read_user:
                user_row = self._known(Side.REQUEST, read_user, user_hashes, users_cache, now)
            if unread:
                fresh = self._known(Side.CANDIDATE, unread, item_hashes, items_cache, now)
        if fresh is None:
            assert cached is not None  # every candidate was a hit
            rows = cached
        elif cached is None:
            rows = fresh
        else:  # the hits from the cache, the rest as just read, each at its candidate's place
            rows = self._empty(len(items))
            for out, old, read in zip(
                rows.as_tuple(), cached.as_tuple(), fresh.as_tuple(), strict=True
            ):
                out[hit] = old
                out[~hit] = read
        if user_row is not None:  # the user's columns added to each candidate's (theirs are 0)
            for out, mine in zip(rows.as_tuple(), user_row.as_tuple(), strict=True):
                out += mine
        return rows, ids

    def _caches(self) -> tuple[RowCache | None, RowCache | None]:
        """This process's caches of user rows and of item rows; None when caching is off."""
        rank = self._rank
        if rank.redis_cache_ttl_s <= 0 or rank.redis_cache_rows <= 0:
            return None, None
        if self._cache is None:
            width, rows, ttl_s = self._empty(0), rank.redis_cache_rows, rank.redis_cache_ttl_s
            self._cache = (RowCache(width, rows, ttl_s), RowCache(width, rows, ttl_s))
        users, items = self._cache
        return users, items

    def _empty(self, n: int) -> Rows:
        schema = self.schema
        assert schema is not None  # set at construction; Optional only in the protocol
        return Rows(
            np.zeros((n, len(schema.dense)), np.float32),
            np.zeros((n, len(schema.categorical)), np.int64),
            np.zeros((n, len(schema.multi_hot), schema.multi_hot_len), np.int64),
        )

    def _known(
        self,
        side: Side,
        entities: list[int],
        hashes: list[list[bytes | None]],
        cache: RowCache | None,
        now: float,
    ) -> Rows:
        """The rows of `entities` read just now, held in `cache`; NotFoundError naming the
        ones with no hash."""
        no_hash = self._no_hash[side]
        absent = [e for e, fields in zip(entities, hashes, strict=True) if fields == no_hash]
        if absent and side is Side.REQUEST:
            raise NotFoundError(
                f"unknown user {absent[0]}",
                f"write its hash, {entity_key(self._rank.redis_namespace, side, absent[0])}",
            )
        if absent:
            raise NotFoundError(
                f"{len(absent)} unknown item id(s): {describe_ids(np.asarray(absent))}",
                f"each item's features live at {self._rank.redis_namespace}:item:{{item_id}}",
            )
        rows = self._decoded(side, entities, hashes)
        if cache is not None:
            cache.put(entities, rows, now)
        return rows

    async def _read(
        self, users: list[int], items: list[int]
    ) -> tuple[list[list[bytes | None]], list[list[bytes | None]]]:
        """Each user's and item's hash fields (all None: no hash), in one command and one round
        trip (`_READ_SCRIPT`) within the budget."""
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
            self._script = self._client.register_script(_READ_SCRIPT)
        namespace = rank.redis_namespace
        keys = [entity_key(namespace, Side.REQUEST, u) for u in users]
        keys += [entity_key(namespace, Side.CANDIDATE, i) for i in items]
        user_fields, item_fields = self._fields[Side.REQUEST], self._fields[Side.CANDIDATE]
        args = [len(users), len(user_fields), *user_fields, *item_fields]
        try:
            async with asyncio.timeout(rank.redis_budget_ms / 1e3):
                values = await self._script(keys=keys, args=args)
        except TimeoutError:
            raise FeatureStoreError(
                f"Redis at {rank.redis} did not answer {len(keys)} reads within "
                f"rank.redis_budget_ms = {rank.redis_budget_ms:g}",
                "check the store's load and network, or raise the budget",
            ) from None
        except (RedisError, OSError) as error:
            raise FeatureStoreError(f"Redis at {rank.redis} failed: {error}") from None
        return values[: len(users)], values[len(users) :]

    def _decoded(self, side: Side, entities: list[int], hashes: list[list[bytes | None]]) -> Rows:
        """The rows of hashes read from Redis, decoded and checked by the code that reads
        feature tables (data/tables.py), so Redis and Parquet agree value for value;
        FeatureStoreError naming the hash that lacks a field or holds a value the schema
        refuses."""
        try:
            return self._encoded(side, hashes, f"Redis {ENTITIES[side]} hashes")
        except ConfigError as error:
            fault = self._hash_at_fault(side, entities, hashes) or error
            raise FeatureStoreError(fault.message, fault.hint) from None

    def _hash_at_fault(
        self, side: Side, entities: list[int], hashes: list[list[bytes | None]]
    ) -> ConfigError | None:
        """The first hash's own error, found hash by hash (on the error path only) so that
        the message names the key to fix."""
        for entity, fields in zip(entities, hashes, strict=True):
            where = f"Redis hash {entity_key(self._rank.redis_namespace, side, entity)}"
            try:
                self._encoded(side, [fields], where)
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
            try:  # numpy parses a column of numbers as text at once
                if kind is FeatureKind.DENSE:
                    arrays[name] = pa.array(np.array(texts, np.bytes_).astype(np.float32))
                elif kind is FeatureKind.CATEGORICAL:
                    arrays[name] = pa.array(np.array(texts, np.bytes_).astype(np.int64))
                else:  # a bag, "3 17 42": split by the table reader
                    arrays[name] = pa.array([t.decode() for t in texts if t is not None])
            except (ValueError, OverflowError, UnicodeDecodeError):
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
    for feature in schema.on_side(side):
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
                _encode_rows(schema, side, table) if schema.on_side(side) else [],
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
