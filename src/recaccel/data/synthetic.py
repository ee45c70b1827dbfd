"""A Criteo-shaped synthetic workload: for speed, memory and scale, never for accuracy.

It has Criteo Kaggle's layout (13 dense counts, 26 categorical fields with the published table
sizes, capped so a heavy model fits on one GPU) and its statistical shape where that shape
drives cost: Zipf-skewed ids spread over each table (cache and embedding-gradient behaviour),
heavy-tailed counts run through DLRM's log(1 + x), and Criteo's click rate. Labels come from a
fixed random logistic "teacher" so training has something to fit; they mean nothing.

Everything is a pure function of the config: each field draws from its own seeded stream, in
row order, so the arrays do not depend on the chunk size used to bound memory.

For `/v1/rank` the fields are split between a request and its candidates, as a real CTR
model's are between the user (and context) and the ad: I1-I6 and C1-C13 are request-side,
I7-I13 and C14-C26 candidate-side. `rank_users` users and `rank_items` items are drawn from the
same distributions (the same hot ids) as the training rows, and a rank request's rows are a
user's share plus each candidate's (`Dataset.feature_tables`). The training rows themselves
draw every field independently, as before: no user or item structure, which is fine for what
this set is for (speed and scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from recaccel.data.dataset import Dataset, Split
from recaccel.data.schema import Feature, FeatureKind, FeatureSchema, Side
from recaccel.errors import ConfigError

# Table sizes of C1..C26 in the Criteo Kaggle (Display Advertising Challenge) data as published
# with DLRM (facebookresearch/dlrm, the Kaggle day-split preprocessing).
CRITEO_KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
N_DENSE = 13
# The request's share of the fields (the rest are each candidate's): see the module docstring.
REQUEST_DENSE = 6
REQUEST_CATEGORICAL = 13
SYNTHETIC_NOTE = "synthetic: labels are random; never use for accuracy claims"

_CHUNK_ROWS = 262_144  # rows generated at once: bounds temporaries to ~100 MB
_TEACHER_SCALE = 2.0  # std of the teacher's logit before the intercept: learnable, not trivial


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; every field goes into `Dataset.info` so a run can be reproduced."""

    rows: int = 1_000_000  # total rows across train / validation / test
    # The cap keeps the heavy DLRM (dim 128, fp32) in 24 GiB: the 5 tables above 1M rows
    # become 1M each, so all 26 tables hold 5,569,322 rows * 128 * 4 B = 2.85 GB of weights;
    # with a dense gradient (2.85 GB) and Adam's two moments (5.7 GB) that is ~11.4 GB
    # (10.6 GiB), leaving over half of the 24 GiB for MLPs, activations and the data.
    max_rows_per_table: int = 1_000_000
    # Criteo id popularity is heavy-tailed, roughly a power law; synthetic embedding
    # benchmarks commonly draw ids from a Zipf law with an exponent near 1. 1.05 is a mild
    # choice: set it to match your own traffic's skew.
    zipf_exponent: float = 1.05
    positive_rate: float = 0.256  # Criteo Kaggle's click-through rate in the training data
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # Who and what /v1/rank ranks: users with request-side fields, a catalogue of items.
    rank_users: int = 10_000
    rank_items: int = 100_000

    def __post_init__(self) -> None:
        if self.rows < 10:
            raise ConfigError(f"rows={self.rows} < 10", "generate at least 10 rows")
        if self.max_rows_per_table < 2:
            raise ConfigError(
                f"max_rows_per_table={self.max_rows_per_table} < 2",
                "each table needs room for more than one id; use e.g. 1_000_000",
            )
        if not self.zipf_exponent > 0:
            raise ConfigError(
                f"zipf_exponent={self.zipf_exponent} must be > 0",
                "use ~1.05 for Criteo-like skew; values near 0 approach uniform ids",
            )
        if not 0 < self.positive_rate < 1:
            raise ConfigError(
                f"positive_rate={self.positive_rate} is not in (0, 1)",
                "Criteo Kaggle's click rate is ~0.256",
            )
        if self.rank_users < 1 or self.rank_items < 1:
            raise ConfigError(
                f"rank_users={self.rank_users}, rank_items={self.rank_items}: need >= 1 each"
            )
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{name}={value} is not in (0, 1)", "use e.g. 0.1")
        n_train, n_val, n_test = self.split_sizes()
        if min(n_train, n_val, n_test) < 1:
            raise ConfigError(
                f"splits of {self.rows} rows would be {n_train}/{n_val}/{n_test} rows",
                "every split needs a row: raise rows or keep the fractions summing below ~0.9",
            )

    def split_sizes(self) -> tuple[int, int, int]:
        """(train, validation, test) row counts; train takes the rounding remainder."""
        n_val = round(self.rows * self.validation_fraction)
        n_test = round(self.rows * self.test_fraction)
        return self.rows - n_val - n_test, n_val, n_test


def criteo_synthetic_schema(max_rows_per_table: int) -> FeatureSchema:
    """Criteo Kaggle's 13 + 26 fields, each table capped at `max_rows_per_table` real ids."""
    dense = tuple(
        Feature(
            f"I{i}",
            FeatureKind.DENSE,
            description=f"synthetic count {i}, log(1 + x)",
            side=Side.REQUEST if i <= REQUEST_DENSE else Side.CANDIDATE,
        )
        for i in range(1, N_DENSE + 1)
    )
    categorical = tuple(
        Feature(
            f"C{i}",
            FeatureKind.CATEGORICAL,
            cardinality=min(card, max_rows_per_table) + 1,
            description=f"synthetic Zipf ids: {min(card, max_rows_per_table)} of Criteo's "
            f"{card}; 0 = unknown",
            side=Side.REQUEST if i <= REQUEST_CATEGORICAL else Side.CANDIDATE,
        )
        for i, card in enumerate(CRITEO_KAGGLE_CARDINALITIES, start=1)
    )
    return FeatureSchema(dense + categorical, label="click", name="criteo-synthetic")


def estimate_embedding_bytes(
    schema: FeatureSchema, embedding_dim: int, bytes_per_value: int = 4
) -> int:
    """Bytes of all embedding tables at one width: the number that decides what fits."""
    return sum(f.cardinality for f in schema.sparse) * embedding_dim * bytes_per_value


class _ZipfTable:
    """Bounded Zipf ids over one table: rank r has p(r) ∝ r^-s, r = 1..n.

    numpy's `Generator.zipf` is unbounded (and needs s > 1), so ranks come from the inverse CDF.
    A fixed random permutation maps rank to id so the hot ids are scattered over the table as
    hashed ids are, rather than packed at its start, which would flatter any cache.
    """

    def __init__(self, n: int, exponent: float, seeds: np.random.SeedSequence) -> None:
        perm_seed, draw_seed = seeds.spawn(2)
        cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -exponent)
        self.cdf = cdf / cdf[-1]
        self.ids = np.random.default_rng(perm_seed).permutation(n).astype(np.int64) + 1
        self.rng = np.random.default_rng(draw_seed)

    def draw(self, count: int) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, self.rng.random(count), side="right")
        return self.ids[np.minimum(ranks, len(self.ids) - 1)]


def _hash_unit(ids: np.ndarray, salt: np.uint64) -> np.ndarray:
    """A fixed pseudo-random value in [-√3, √3) (unit variance) per id: splitmix64's finaliser.

    It gives the teacher a weight for every (table, id) without storing a table of them.
    """
    x = ids.astype(np.uint64) + salt
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    unit: np.ndarray = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (unit * 2.0 - 1.0) * float(np.sqrt(3.0))


def _intercept(scores: np.ndarray, positive_rate: float) -> float:
    """b with mean(sigmoid(b + scores)) = positive_rate, by bisection (the mean is monotone)."""
    low, high = -50.0, 50.0
    for _ in range(40):  # width 100 / 2**40 < 1e-10
        mid = (low + high) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(mid + scores)))))
        low, high = (mid, high) if rate < positive_rate else (low, mid)
    return (low + high) / 2


def _count_shape(teacher: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per dense field, the log-scale of its raw counts and its spread (a heavy right tail)."""
    return teacher.uniform(0.0, 4.0, N_DENSE), teacher.uniform(0.5, 2.0, N_DENSE)


def _dense_values(
    mu: np.ndarray, sigma: np.ndarray, rng: np.random.Generator, count: int
) -> np.ndarray:
    """`count` rows of the dense fields: counts through DLRM's log(1 + x)."""
    counts = np.floor(np.exp(mu + sigma * rng.standard_normal((count, len(mu)))))
    return np.log1p(counts)


def _rank_tables(
    config: SyntheticConfig,
    schema: FeatureSchema,
    zipf: list[_ZipfTable],
    count_shape: tuple[np.ndarray, np.ndarray],
) -> tuple[pa.Table, pa.Table]:
    """The users and items a rank request is made of (module docstring): each field from the
    training rows' distribution (their `zipf` tables and counts' shape: the same hot ids),
    drawn from streams of its own."""
    rank_seed = np.random.SeedSequence([config.seed, 1])  # not the training rows' streams
    dense_seed, *draw_seeds = rank_seed.spawn(1 + len(zipf))
    dense_rng = np.random.default_rng(dense_seed)
    sides: dict[Side, dict[str, np.ndarray]] = {
        Side.REQUEST: {"user_id": np.arange(1, config.rank_users + 1, dtype=np.int64)},
        Side.CANDIDATE: {"item_id": np.arange(1, config.rank_items + 1, dtype=np.int64)},
    }
    for side, table in sides.items():
        rows = len(next(iter(table.values())))
        values = _dense_values(*count_shape, dense_rng, rows).astype(np.float32)
        for j, feature in enumerate(schema.dense):
            if feature.side is side:
                table[feature.name] = values[:, j]
    for j, feature in enumerate(schema.categorical):
        zipf[j].rng = np.random.default_rng(draw_seeds[j])  # the same hot ids, other draws
        table = sides[feature.side]
        table[feature.name] = zipf[j].draw(len(next(iter(table.values()))))
    return pa.table(sides[Side.REQUEST]), pa.table(sides[Side.CANDIDATE])


def make_criteo_synthetic(config: SyntheticConfig, progress: bool = False) -> Dataset:
    """Generate the workload; identical arrays for an identical config."""
    schema = criteo_synthetic_schema(config.max_rows_per_table)
    tables = [f.cardinality - 1 for f in schema.categorical]
    n, n_cat = config.rows, len(tables)
    teacher_seed, dense_seed, label_seed, *table_seeds = np.random.SeedSequence(config.seed).spawn(
        3 + n_cat
    )

    teacher = np.random.default_rng(teacher_seed)
    count_mu, count_sigma = _count_shape(teacher)
    weight_scale = _TEACHER_SCALE / np.sqrt(N_DENSE + n_cat)
    dense_weights = teacher.normal(0.0, weight_scale, N_DENSE) / count_sigma
    table_weights = teacher.normal(0.0, weight_scale, n_cat)
    salts = teacher.integers(0, 2**63, n_cat, dtype=np.uint64)

    zipf = [
        _ZipfTable(t, config.zipf_exponent, s) for t, s in zip(tables, table_seeds, strict=True)
    ]
    dense_rng = np.random.default_rng(dense_seed)
    dense = np.empty((n, N_DENSE), dtype=np.float32)
    categorical = np.empty((n, n_cat), dtype=np.int64)
    scores = np.empty(n, dtype=np.float64)
    for start in tqdm(
        range(0, n, _CHUNK_ROWS), desc="synthetic", disable=None if progress else True
    ):
        rows = slice(start, min(start + _CHUNK_ROWS, n))
        count = rows.stop - rows.start
        values = _dense_values(count_mu, count_sigma, dense_rng, count)
        dense[rows] = values
        score = values @ dense_weights
        for j, table in enumerate(zipf):
            ids = table.draw(count)
            categorical[rows, j] = ids
            score += table_weights[j] * _hash_unit(ids, salts[j])
        scores[rows] = score

    probability = 1.0 / (1.0 + np.exp(-(_intercept(scores, config.positive_rate) + scores)))
    label = (np.random.default_rng(label_seed).random(n) < probability).astype(np.float32)
    multi_hot = np.zeros((n, 0, 1), dtype=np.int64)  # no multi-hot fields: zero-sized axis

    n_train, n_val, _ = config.split_sizes()
    bounds = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)]
    train, validation, test = (
        Split(dense[a:b], categorical[a:b], multi_hot[a:b], label[a:b]) for a, b in bounds
    )
    return Dataset(
        name="criteo-synthetic",
        schema=schema,
        train=train,
        validation=validation,
        test=test,
        synthetic=True,
        info={
            "config": asdict(config),
            "note": SYNTHETIC_NOTE,
            "positive_rate": float(label.mean()),
        },
        feature_tables=_rank_tables(config, schema, zipf, (count_mu, count_sigma)),
    )
