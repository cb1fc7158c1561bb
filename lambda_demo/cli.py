"""``lambda-demo``: the command line behind the README, the notebooks' helpers and CI.

Usage::

    lambda-demo stack up | down | status [--json] | reset
    lambda-demo sample generate --tweets N --days D --seed S --out PATH
    lambda-demo replay [--file PATH ...] [--speedup X] [--start ISO] [--loop] [--json]
    lambda-demo live
    lambda-demo batch [--cutoff YYYY-MM-DD]
    lambda-demo speed [--once] [--trigger-seconds S]
    lambda-demo query [--top N] [--by COLUMN] [--json]
    lambda-demo check [--json]
    lambda-demo demo [--speedup X]

Each command's logic lives in the module named after it; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lambda_demo.errors import LambdaDemoError

Handler = Callable[[argparse.Namespace], int]


def _stack(args: argparse.Namespace) -> int:
    from lambda_demo import stack

    if args.action == "up":
        statuses = stack.up()
    elif args.action == "down":
        stack.down()
        print("stack stopped; data kept (`lambda-demo stack reset` wipes it)")
        return 0
    elif args.action == "reset":
        stack.reset()
        print("stack stopped and all data deleted")
        return 0
    else:
        statuses = stack.status()
    if getattr(args, "json", False):
        print(stack.status_json(statuses))
    else:
        for s in statuses:
            mark = "up  " if s.up else "DOWN"
            print(f"[{mark}] {s.name:<9} {s.address:<16} {s.version}")
            if s.problem:
                print(f"         {s.problem}")
    return 0 if all(s.up for s in statuses) else 1


def _sample(args: argparse.Namespace) -> int:
    from lambda_demo import sample

    counts = sample.write(args.out, tweets=args.tweets, days=args.days, seed=args.seed)
    print(json.dumps(counts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-demo",
        description="The Lambda Architecture on a stream of tweets: Kafka, S3, Spark, SQL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = commands.add_parser("stack", help="start, stop, inspect or wipe the embedded stack")
    actions = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("up", help="start Kafka, S3 and PostgreSQL (idempotent)")
    actions.add_parser("down", help="stop every service, keep the data")
    st = actions.add_parser("status", help="each service's address, version and health")
    st.add_argument("--json", action="store_true", help="one JSON object: name -> details")
    actions.add_parser("reset", help="stop every service and delete all data")
    stack.set_defaults(handler=_stack)

    sample = commands.add_parser("sample", help="generate synthetic tweets")
    sample_actions = sample.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = sample_actions.add_parser("generate", help="write a reproducible sample file")
    gen.add_argument("--tweets", type=int, default=30_000)
    gen.add_argument("--days", type=int, default=3)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", type=Path, required=True, help="*.jsonl or *.jsonl.gz")
    sample.set_defaults(handler=_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python is chatty at INFO
    handler: Handler = args.handler
    try:
        return handler(args)
    except LambdaDemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
