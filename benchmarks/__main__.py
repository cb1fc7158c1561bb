"""``python -m benchmarks [--quick] [--only NAME,...] [--sizes N,...]``.

Runs every benchmark on a private embedded stack in a fresh home, writes
``benchmarks/results.json`` after each one (a partial run still leaves its figures), then
``benchmarks/growth.png`` and ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from benchmarks import batch, ingest, pipeline, report, speed
from benchmarks.common import environment, isolated, private_stack
from lambda_demo.ingestion import sample
from lambda_demo.ingestion.replay import replay

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
NAMES = ("ingest", "batch", "batch1m", "recompute", "speed", "freshness", "growth", "demo")


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(name: str, value: object, command: str) -> dict:
    """Merge one benchmark's figures into results.json (two harness runs may share it)."""
    results = load()
    results[name] = value
    results.setdefault("commands", {})[name] = command
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def run_on_private_stack(
    only: set[str], args, repeats: int, tweets: int, sizes: list[int], step
) -> None:
    """Every benchmark except ``demo`` shares one private stack in a fresh home."""
    with private_stack() as home:
        data = home / "bench-sample.jsonl.gz"
        sample.write(data, tweets=tweets, days=7, seed=1)
        small = home / "profile-sample.jsonl.gz"
        sample.write(small, tweets=20_000, days=7, seed=2)
        topic = None
        if "ingest" in only:
            found = ingest.run(home, data, repeats=repeats, profile_sample=small)
            topic = found["topic_settings"]["topic"]
            step("ingest", found)
        if only & {"batch", "speed"} and topic is None:  # an untimed topic to read from
            prepared = isolated(home)
            replay([data], settings=prepared, progress=False)
            topic = prepared.topic
        if "batch" in only:
            step("batch", batch.archive_and_load(home, topic, repeats=repeats))
        if "batch1m" in only:
            step("batch1m", batch.batch_1m(home, tweets=100_000 if args.quick else 1_000_000))
        schema = None
        if only & {"recompute", "freshness"}:
            found, recomputed = batch.recompute_1m(home, tweets=1_000_000, repeats=repeats)
            schema = recomputed.warehouse_schema
            if "recompute" in only:
                step("recompute", found)
        if "speed" in only:
            step("speed", speed.throughput(home, topic, repeats=repeats))
        if "freshness" in only:
            fresh = home / "freshness-sample.jsonl.gz"
            sample.write(fresh, tweets=speed.FRESHNESS_SAMPLE_TWEETS, days=7, seed=3)
            found = speed.freshness_and_serving(
                home, fresh, schema=schema, rate=500, seconds=15 if args.quick else 30
            )
            step("freshness", found)
        if "growth" in only:
            runs = []
            for size in sizes:
                runs.append(pipeline.scale_run(home, size))
                step("growth", runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(NAMES)}")
    parser.add_argument("--sizes", help="growth sizes in tweets, e.g. 100000,300000,1000000")
    parser.add_argument(
        "--report-only", action="store_true", help="only re-render BENCHMARKS.md from results.json"
    )
    args = parser.parse_args(argv)
    if args.report_only:
        report.write(load(), HERE / "growth.png", HERE.parent / "BENCHMARKS.md")
        return 0
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # start-up retries are expected
    only = set(args.only.split(",")) if args.only else set(NAMES)
    repeats = 2 if args.quick else 3
    tweets = 3_000 if args.quick else 10_000
    default_sizes = "10000,30000" if args.quick else "100000,300000,1000000"
    sizes = [int(n) for n in (args.sizes or default_sizes).split(",")]
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    save("environment", environment(), command)

    def step(name: str, value: object) -> None:
        save(name, value, command)
        print(f"[bench] {name}: done", flush=True)

    if only - {"demo"}:
        run_on_private_stack(only, args, repeats, tweets, sizes, step)
    if "demo" in only:
        found = pipeline.demo_wall_time()
        step("demo_runs", [*load().get("demo_runs", []), found])  # every run, failures too
        step("demo", found)
    report.write(load(), HERE / "growth.png", HERE.parent / "BENCHMARKS.md")
    print(f"[bench] wrote {RESULTS}, growth.png and BENCHMARKS.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
