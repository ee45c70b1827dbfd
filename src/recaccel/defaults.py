"""Defaults more than one stage uses, each defined once.

Every stage may import this module (it imports nothing), so the optimizer, the profile's
selection, the serving config, the bench, the deployments and the CLI's flags and help all take
these names; change a default here and every stage follows.

DEFAULT_SLO_P99_MS
    The latency bound of one rank request: its 99th percentile, in milliseconds, as the server
    measures it. Serving admits and batches for it (`slo.p99_ms`), `profile --select` and
    `serve --select` choose the configuration that serves the most requests within it, the bench
    holds every configuration to it, Triton's queue delay and Ray's replicas are sized from it.

DEFAULT_RELATIVE_BUDGET
    The validation AUC an optimized model may lose against the original, as a fraction of the
    original's: 0.001 keeps 99.9% of it, MLPerf's accuracy target. The optimizer's guard judges
    each step with it, and selection (profile, serve, bench, Ray) refuses configurations past it.

DEFAULT_CANDIDATES
    The candidates (rows) of a typical rank request: the serving batch the optimizer and the
    profile time, the request size selection plans for when nothing else says, and the median
    of the bench's workload.
"""

from __future__ import annotations

DEFAULT_SLO_P99_MS = 50.0
DEFAULT_RELATIVE_BUDGET = 0.001
DEFAULT_CANDIDATES = 100
