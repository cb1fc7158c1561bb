"""Turn ``results.json`` into ``growth.png`` and ``BENCHMARKS.md``: every figure beside its
baseline as a ratio, and every target marked met or missed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.ingest import TARGET_TWEETS_PER_SECOND as TARGET_REPLAY
from benchmarks.speed import ROUND_TRIP, worst_serving_p99
from benchmarks.speed import TARGET_TWEETS_PER_SECOND as TARGET_SPEED

NOTES = Path(__file__).resolve().parent / "notes.md"


def n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def verdict(met: bool, by: str) -> str:
    return f"**met** ({by})" if met else f"**missed** ({by})"


def plot(growth: list[dict], path: Path) -> None:
    sizes = [run["tweets"] for run in growth]
    stages = [s for s in growth[0]["stages"] if s != "sample"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in stages:
        left.plot(sizes, [r["stages"][stage]["per_s"] for r in growth], "o-", label=stage)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="tweets",
        ylabel="lines / s",
        title="Throughput per stage",
    )
    left.legend()
    services = ["kafka", "s3", "postgres", "spark_jvm"]
    for service in services:
        peaks = [
            max(s.get("peak_rss_mb", {}).get(service, 0) for s in r["stages"].values())
            for r in growth
        ]
        right.plot(sizes, peaks, "o-", label=service)
    # This process, split: the pipeline's stages vs `check`, which holds every tweet by design.
    pipeline = [s for s in stages if s != "check"]
    for label, chosen in (("python: pipeline", pipeline), ("python: check", ["check"])):
        peaks = [
            max(r["stages"][s].get("peak_rss_mb", {}).get("python", 0) for s in chosen)
            for r in growth
        ]
        right.plot(sizes, peaks, "o--", label=label)
    right.set(xscale="log", xlabel="tweets", ylabel="MiB", title="Peak RSS per process")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ingest(r: dict) -> list[str]:
    ours = r["ours_tweets_per_s"]
    old = r["the_2017_way_tweets_per_s"]
    tool = r["producer_performance_records_per_s"]
    met = ours["median"] >= r["target_tweets_per_s"]
    return [
        f"{n(r['records'])} lines of the sample, mean flat record {r['mean_flat_record_bytes']} B. "
        "The 2017 loop sends the first 2,000 lines (one round trip per record: a flat rate); "
        "`ProducerPerformance` sends max(10x, 100,000) records so its JVM warm-up does not "
        "dominate.",
        "",
        "| producer | tweets/s (median) | min..max | ratio: ours / this |",
        "|---|---:|---:|---:|",
        f"| **lambda-demo replay** (speedup 0) | {n(ours['median'])} | "
        f"{n(ours['min'])}..{n(ours['max'])} | 1.00 |",
        f"| 2017: `send(';'.join(...)).get()` per record | {n(old['median'])} | "
        f"{n(old['min'])}..{n(old['max'])} | {r['ratio_vs_2017']:.2f} |",
        f"| Kafka `ProducerPerformance`, same size, acks=all | {n(tool['median'])} | "
        f"{n(tool['min'])}..{n(tool['max'])} | {r['ratio_vs_producer_performance']:.3f} |",
        "",
        f"Target >= {n(r['target_tweets_per_s'])} tweets/s: "
        + verdict(
            met,
            f"{r['ratio_vs_target']:.3f} of target, {1 / r['ratio_vs_target']:.0f}x short"
            if not met
            else "",
        )
        + ".",
        "",
        "Per repeat (each trio ran back to back, so it saw the same neighbours): ours / 2017 = "
        + ", ".join(f"{a / b:.1f}" for a, b in zip(ours["runs"], old["runs"], strict=True))
        + "; ours / ProducerPerformance = "
        + ", ".join(f"{a / b:.3f}" for a, b in zip(ours["runs"], tool["runs"], strict=True))
        + ".",
        "",
        f"Where the replay's time goes (cProfile of the main thread replaying "
        f"{n(r.get('profile_tweets', 2_000))} other tweets, by own time; kafka-python's I/O "
        "thread is not in it):",
        "",
        "```text",
        r["profile"],
        "```",
    ]


def _batch(r: dict) -> list[str]:
    ratio = r["load_time_over_copy_time"]
    lines = [
        f"{n(r['records'])} Kafka records archived, {n(r['rows'])} rows loaded.",
        "",
        "| step | rate (median) | baseline | ratio |",
        "|---|---:|---:|---:|",
        f"| archive Kafka -> S3 | {n(r['archive_records_per_s']['median'])} records/s | - | - |",
        f"| load S3 -> `raw_tweets` | {n(r['load_rows_per_s']['median'])} rows/s | "
        f"`psql \\copy` {n(r['psql_copy_rows_per_s']['median'])} rows/s | "
        f"load takes {ratio['median']:.1f}x the \\copy time |",
        "",
        "Target: load within 2x of `\\copy`: "
        + verdict(r["load_target_met"], f"{ratio['median']:.1f}x, min {ratio['min']:.1f}x")
        + ".",
    ]
    for step, text in r.get("profiles", {}).items():
        lines += [
            "",
            f"Where `{step}` spends its time (cProfile, by own time):",
            "",
            "```text",
            text,
            "```",
        ]
    return lines


def _batch_1m(r: dict) -> list[str]:
    ratio = r["load_time_over_copy_time"]
    replay_ratio = r["replay_over_producer_performance"]
    return [
        f"{n(r['tweets'])} sample tweets over 7 days ({n(r['lines_read'])} lines) replayed at "
        f"speedup 0, then the three batch steps one after the other: {n(r['records'])} Kafka "
        f"records in {n(r['objects'])} objects, {n(r['rows'])} rows loaded, "
        f"{n(r['quarantined'])} quarantined, {n(r['tweets_in_view'])} tweets in the view. "
        f"Load average before the run: {r['load_average_before']}.",
        "",
        "| step | seconds | baseline, same data, same run | ratio |",
        "|---|---:|---|---:|",
        f"| replay (speedup 0, acked) | {r['replay_seconds']:.1f} "
        f"({n(r['replay_tweets_per_s'])} tweets/s) | `ProducerPerformance`, as many records of "
        f"{r['mean_flat_record_bytes']} B, acks=all: "
        f"{n(r['producer_performance_records_per_s'])} records/s | {replay_ratio:.3f} |",
        f"| archive Kafka -> S3 (raw + staged copy) | {r['archive_seconds']:.1f} | - | - |",
        f"| load S3 -> `raw_tweets` | {r['load_seconds']:.1f} | `psql \\copy` of the same rows: "
        f"{r['copy_seconds']:.2f} s | {ratio:.2f}x |",
        f"| recompute | {r['recompute_seconds']:.1f} | - | - |",
        f"| **batch (archive + load + recompute)** | **{r['batch_seconds']:.1f}** | - | - |",
        "",
        f"Target batch <= {r['target_batch_seconds']:.0f} s: "
        + verdict(r["batch_target_met"], f"{r['batch_seconds']:.1f} s")
        + f". Target load <= {r['target_load_over_copy']:.0f}x `\\copy`: "
        + verdict(r["load_target_met"], f"{ratio:.2f}x")
        + ".",
    ]


def _recompute(r: dict) -> list[str]:
    ours = r["recompute_seconds"]
    plain = r["deduplicated_sql_seconds"]
    lines = [
        f"{n(r['tweets'])} tweets ({n(r['rows'])} deliveries, 1% duplicated), cutoff = last day "
        f"({n(r['tweets_in_view'])} tweets in the view).",
        "",
        "| query | seconds (median) | min | ratio |",
        "|---|---:|---:|---:|",
        f"| `recompute` (dedup by ROW_NUMBER + aggregate + swap) | {ours['median']:.2f} | "
        f"{ours['min']:.2f} | {r['ratio_vs_deduplicated']:.1f}x |",
        f"| same aggregate on a pre-deduplicated table | {plain['median']:.2f} | "
        f"{plain['min']:.2f} | 1.0x |",
        "",
        "Target < 3 s: "
        + verdict(
            r["target_met"],
            f"{ours['median']:.2f} s = {ours['median'] / r['target_seconds']:.2f} of the budget",
        )
        + ".",
    ]
    if "plan" in r:
        lines += [
            "",
            f"The recompute's executed plan (`work_mem` {r['work_mem']}, collation "
            f"`{r['collation']}`):",
            "",
            "```text",
            r["plan"],
            "```",
        ]
    return lines


def _speed(r: dict) -> list[str]:
    ours = r["speed_once_tweets_per_s"]
    plain = r["spark_batch_read_records_per_s"]
    met = ours["median"] >= r["target_tweets_per_s"]
    return [
        f"{n(r['records'])} records in the topic, Spark `local[2]`, session already started.",
        "",
        "| reader | records/s (median) | min..max | ratio |",
        "|---|---:|---:|---:|",
        f"| `speed.start_queries(once=True)` | {n(ours['median'])} | "
        f"{n(ours['min'])}..{n(ours['max'])} | {r['ratio_vs_spark_read']:.2f} |",
        f"| `spark.read.format('kafka')...count()` | {n(plain['median'])} | "
        f"{n(plain['min'])}..{n(plain['max'])} | 1.00 |",
        "",
        f"Target >= {n(r['target_tweets_per_s'])} tweets/s: "
        + verdict(met, f"{r['ratio_vs_target']:.2f} of target")
        + ".",
    ]


def _cycle_lines(r: dict) -> list[str]:
    """Why freshness is what it is: a record waits for the micro-batch in flight, then its own."""
    if "first_visible_s" not in r:  # results recorded before the warm-up existed
        return []
    lines = [
        f"- measured after a warm-up: the first {r.get('warm_up_tweets', 500)} tweets took "
        f"{r['first_visible_s']:.2f} s to show (Spark starting its Python workers and "
        "compiling the query)"
        + (
            f"; then {r['warm_up_seconds']:g} s of tweets at the same rate, untimed, before "
            "each window (the JVM compiles the micro-batch's code as it runs)."
            if "warm_up_seconds" in r
            else "."
        ),
    ]
    if cycle := r.get("micro_batch_ms"):
        lines.append(
            f"- a view micro-batch took {n(cycle['median'])} ms (median; "
            f"{n(cycle['min'])}..{n(cycle['max'])}): a tweet waits for the one in flight, then "
            "for its own, so p95 is about two of them."
        )
    if (loaded := r.get("under_serving_load")) and loaded["micro_batch_ms"]:
        lines.append(
            f"- at the default {loaded['trigger_seconds']:g} s trigger, with the serving "
            "queries below running back to back beside it: "
            f"p50 {loaded['freshness_p50_s']:.2f} s, p95 {loaded['freshness_p95_s']:.2f} s, "
            f"micro-batch {n(loaded['micro_batch_ms']['median'])} ms (median)."
        )
    return lines


def _freshness(r: dict) -> list[str]:
    busy, idle = r["serving_under_load"], r["serving_idle"]
    lines = [
        f"Producing {n(r['rate_achieved'])} tweets/s (asked {r['rate_asked']}) for "
        f"{n(r['produced'])} tweets while the speed queries run at a "
        f"{r['trigger_seconds']:g} s trigger; {n(r['visible'])} became visible.",
        "",
        f"- freshness (handed to the producer -> counted in `speed_view`): "
        f"p50 {r['freshness_p50_s']:.2f} s, p95 {r['freshness_p95_s']:.2f} s. "
        f"Target p95 <= {r['freshness_target_p95_s']:g} s: "
        + verdict(
            r["freshness_target_met"],
            f"{r['freshness_p95_s'] / r['freshness_target_p95_s']:.2f} of budget",
        )
        + ".",
        *_cycle_lines(r),
        "",
        "Serving queries over a 1M-tweet batch view + the live speed view "
        "(`serving` reuses one connection per process; `SELECT 1` through the same path is "
        "the floor, and the last column is each query's p99 over that floor's):",
        "",
        "| query | calls | p50 ms under load | p99 ms under load | p99 ms idle | "
        "ratio p99 load/idle | ratio p99 / `SELECT 1` p99 (load) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    floor = busy.get(ROUND_TRIP, {}).get("p99_ms")
    for name, v in busy.items():
        quiet = idle[name]
        over_floor = f"{v['p99_ms'] / floor:.1f}" if floor else "-"
        lines.append(
            f"| `{name}` | {v['n']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | "
            f"{quiet['p99_ms']:.1f} | {v['p99_ms'] / quiet['p99_ms']:.1f} | {over_floor} |"
        )
    worst = worst_serving_p99(busy)
    lines += [
        "",
        "Target p99 < 20 ms: "
        + verdict(r["serving_target_met"], f"worst p99 {worst:.1f} ms")
        + ".",
    ]
    return lines


def _growth(runs: list[dict]) -> list[str]:
    stages = [s for s in runs[0]["stages"] if s != "sample"]
    lines = [
        "![growth](benchmarks/growth.png)",
        "",
        "| tweets | "
        + " | ".join(f"{s} s (lines/s)" for s in stages)
        + " | check | Kafka MB/M | S3 MB/M | warehouse MB/M |",
        "|---:|" + "---:|" * (len(stages) + 4),
    ]
    for run in runs:
        disk = run["disk_mb_per_million_tweets"]
        cells = [
            f"{run['stages'][s]['seconds']:.1f} ({n(run['stages'][s]['per_s'])})" for s in stages
        ]
        check = "0 mismatches" if run["check_ok"] else f"**{run['check_mismatches']} MISMATCHES**"
        lines.append(
            f"| {n(run['tweets'])} | "
            + " | ".join(cells)
            + f" | {check} | {disk['kafka']:.0f} | {disk['s3']:.0f} | {disk['warehouse']:.0f} |"
        )
    lines += [
        "",
        "Peak RSS (MiB) per process, largest over the stages, per size:",
        "",
        "| tweets | python | kafka | s3 | postgres | spark JVM |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        peak = {
            k: max(s.get("peak_rss_mb", {}).get(k, 0) for s in run["stages"].values())
            for k in ("python", "kafka", "s3", "postgres", "spark_jvm")
        }
        lines.append(
            f"| {n(run['tweets'])} | " + " | ".join(f"{v:.0f}" for v in peak.values()) + " |"
        )
    stages = [s for s in runs[0]["stages"] if s != "sample"]
    lines += [
        "",
        "Peak RSS (MiB) of the harness's Python process in each stage, sampled every 0.5 s, and "
        "in brackets its rise over the RSS the stage started with (Python keeps memory that "
        "earlier stages freed, so the rise is what the stage itself needed):",
        "",
        "| tweets | " + " | ".join(stages) + " |",
        "|---:|" + "---:|" * len(stages),
    ]
    for run in runs:
        cells = []
        for stage in (run["stages"][s] for s in stages):
            peak = stage.get("peak_rss_mb", {}).get("python", 0)
            rise = max(0.0, peak - stage.get("python_start_mb", peak))
            cells.append(f"{peak:.0f} (+{rise:.0f})")
        lines.append(f"| {n(run['tweets'])} | " + " | ".join(cells) + " |")
    if all("baselines" in run for run in runs):
        lines += [
            "",
            "Each stage beside its baseline, run right after it on the same data (ratio >= 1 "
            "means ours is as fast as the tool's own path):",
            "",
            "| tweets | replay / `ProducerPerformance` (rate) | speed_once / Spark batch read "
            "(rate) | `\\copy` time / load time |",
            "|---:|---:|---:|---:|",
        ]
        for run in runs:
            b = run["baselines"]
            lines.append(
                f"| {n(run['tweets'])} | {b['replay_over_producer_performance']:.3f} "
                f"(tool {n(b['producer_performance_records_per_s'])}/s) | "
                f"{b['speed_over_spark_read']:.2f} (read {n(b['spark_read_records_per_s'])}/s) | "
                f"{1 / b['load_time_over_copy_time']:.3f} "
                f"(load {b['load_time_over_copy_time']:.1f}x the `\\copy` time) |"
            )
    biggest = runs[-1]
    tables = biggest["disk_mb_per_million_tweets"]["warehouse_tables"]
    lines += [
        "",
        f"Warehouse MB per million tweets at {n(biggest['tweets'])}: "
        + ", ".join(f"`{t}` {v:.0f}" for t, v in tables.items())
        + ".",
    ]
    return lines


def _demo(r: dict) -> list[str]:
    lines = [
        "`lambda-demo demo` as a subprocess in a fresh home (JVM artifacts cached). Every run:",
        "",
        "| run | started | load average before | seconds | exit | result |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for i, run in enumerate(r["runs"] or [r], 1):
        outcome = run["check"]
        if run["returncode"] != 0:
            outcome = "FAILED: " + "; ".join(run.get("errors") or [outcome]).replace("|", "/")
        outcome = " ".join(outcome.split())[:300]
        load = run.get("load_average_before")
        lines.append(
            f"| {i} | {run.get('started', '?')} | {load[0] if load else '?'} | "
            f"{run['seconds']:.0f} | {run['returncode']} | {outcome} |"
        )
    lines += [
        "",
        f"Target ≤ {r['target_seconds']:.0f} s: "
        + verdict(r["target_met"], f"latest run {r['ratio_vs_target']:.2f} of budget")
        + ".",
    ]
    return lines


def _targets(results: dict) -> list[str]:
    """One line per target: measured value, target, met or missed and by how much."""
    rows = []

    def add(name: str, value: float, target: float, unit: str, higher: bool) -> None:
        met = value >= target if higher else value < target
        factor = value / target if higher else target / value if value else float("inf")
        rows.append(
            f"| {name} | {n(value, 2 if value < 100 else 0)} {unit} | "
            f"{'>=' if higher else '<'} {n(target, 0 if float(target).is_integer() else 2)} "
            f"{unit} | "
            f"{'met' if met else 'MISSED'} | {factor:.3f} |"
        )

    if r := results.get("ingest"):
        add(
            "replay throughput",
            r["ours_tweets_per_s"]["median"],
            r["target_tweets_per_s"],
            "tweets/s",
            True,
        )
    if r := results.get("batch"):
        add(
            "load time / `\\copy` time",
            r["load_time_over_copy_time"]["median"],
            r["target_load_over_copy"],
            "x",
            False,
        )
    if r := results.get("recompute"):
        add(
            "recompute over 1M tweets",
            r["recompute_seconds"]["median"],
            r["target_seconds"],
            "s",
            False,
        )
    if r := results.get("speed"):
        add(
            "speed layer throughput",
            r["speed_once_tweets_per_s"]["median"],
            r["target_tweets_per_s"],
            "tweets/s",
            True,
        )
    if runs := results.get("growth"):
        largest = max(runs, key=lambda run: run["tweets"])
        for stage, name, target in (
            ("replay", "replay throughput", TARGET_REPLAY),
            ("speed_once", "speed layer throughput", TARGET_SPEED),
        ):
            add(
                f"{name} at scale ({n(largest['tweets'])} tweets, one run)",
                largest["stages"][stage]["per_s"],
                target,
                "tweets/s",
                True,
            )
        if baselines := largest.get("baselines"):
            add(
                f"load time / `\\copy` time at scale ({n(largest['tweets'])} tweets, one run)",
                baselines["load_time_over_copy_time"],
                results.get("batch", {}).get("target_load_over_copy", 2.0),
                "x",
                False,
            )
    if r := results.get("freshness"):
        add(
            f"freshness p95 ({r['trigger_seconds']:g} s trigger)",
            r["freshness_p95_s"],
            r["freshness_target_p95_s"],
            "s",
            False,
        )
        worst = worst_serving_p99(r["serving_under_load"])
        add(
            "serving p99 (worst query, under load)",
            worst,
            r["serving_target_p99_ms"],
            "ms",
            False,
        )
    if r := results.get("batch1m"):
        add("batch (archive + load + recompute), 1M", r["batch_seconds"], 20.0, "s", False)
        add("load time / `\\copy` time, 1M", r["load_time_over_copy_time"], 2.0, "x", False)
        add(
            "replay / `ProducerPerformance`, 1M",
            r["replay_over_producer_performance"],
            0.25,
            "",
            True,
        )
    if r := results.get("demo"):
        add("`lambda-demo demo` wall time", r["seconds"], r["target_seconds"], "s", False)
    if runs := results.get("growth"):
        bad = sum(run["check_mismatches"] for run in runs)
        rows.append(
            f"| `check` mismatches (all scale runs) | {bad} | 0 | "
            f"{'met' if bad == 0 else 'MISSED'} | - |"
        )
    return [
        "| target | measured (median) | target | verdict | measured / target (>= 1 is good) |",
        "|---|---:|---:|---|---:|",
        *rows,
    ]


SECTIONS = [
    ("ingest", "1. Replay throughput (speedup 0, acked)", _ingest),
    ("batch", "2a. Archive and load", _batch),
    ("batch1m", "2c. The batch run over 1M replayed tweets (issue 20)", _batch_1m),
    ("recompute", "2b. Recompute of the batch view over 1M tweets", _recompute),
    ("speed", "3a. Speed layer throughput", _speed),
    ("freshness", "3b. Freshness at the default trigger, and 4a. serving latency", _freshness),
    ("demo", "4b. `lambda-demo demo` wall time", _demo),
    ("growth", "5 and 6. Scale run and growth", _growth),
]


def write(results: dict, png: Path, markdown: Path) -> None:
    env = results["environment"]
    if results.get("growth"):
        plot(results["growth"], png)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks` (`make bench`) from `benchmarks/results.json`; do "
        "not edit by hand except `benchmarks/notes.md`, which is included below.",
        "",
        f"Environment recorded {env['date']}. Machine: {env['cores']} cores, "
        f"{env['memory_gib']} GiB, load average "
        f"at start {env['load_average_at_start']} (shared with other jobs: compare the ratios, "
        f"not the absolute rates). Python {env['python']}, {env['java']}, Kafka {env['kafka']}, "
        f"S3Proxy {env['s3proxy']}, Spark {env['spark']}, {env['postgresql']}.",
        "",
        "Each figure is measured side by side with its baseline in the same process tree, on a "
        "private embedded stack in a fresh home; repeated runs give min / median / max.",
    ]
    lines += ["", "## Targets at a glance", "", *_targets(results)]
    for key, title, render in SECTIONS:
        lines += ["", f"## {title}", ""]
        if not results.get(key):
            lines.append("Not run in this results file.")
            continue
        command = results.get("commands", {}).get(key) or results.get("command", "?")
        lines += [f"Command: `{command.strip()}`", ""]
        value = results[key]
        if key == "demo":  # every demo run is listed, failures included
            value = {**value, "runs": results.get("demo_runs", [])}
        lines += render(value)
    if NOTES.exists():
        lines += ["", NOTES.read_text().rstrip()]
    markdown.write_text("\n".join(lines) + "\n")
