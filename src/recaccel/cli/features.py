"""`recaccel features push`: write a users and an items table to Redis, for `serve --redis`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recaccel.cli.common import console


def handle(args: argparse.Namespace) -> int:
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


def add_parser(verbs: Any) -> None:
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
    push.set_defaults(run=handle)
