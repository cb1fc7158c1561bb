"""``lambda-demo``: the command line behind the README, the notebooks' helpers and CI.

Usage::

    lambda-demo stack up | down | status [--json] | reset
    lambda-demo sample generate --tweets N --days D --seed S --out PATH
    lambda-demo replay [--file PATH ...] [--speedup X] [--start ISO] [--loop] [--json]
    lambda-demo live [--sample]
    lambda-demo xapi serve [--file PATH ...] [--speedup X] [--port N] [--once]
    lambda-demo batch [--cutoff YYYY-MM-DD] [--only archive|load|recompute]
    lambda-demo speed [--once] [--trigger-seconds S]
    lambda-demo query [--top N] [--by COLUMN] [--json]
    lambda-demo check [--json]
    lambda-demo status [--json]
    lambda-demo sql [--dialect postgres|redshift]
    lambda-demo demo [--speedup X]
    lambda-demo prefetch
    lambda-demo doctor [--quick]

Each command's logic lives in the module named after it; this file only parses arguments
and reports failures: an expected one (a service down, a bad value, a failed Spark query) as
one or two lines that say what happened and what to do, with exit code 2; the traceback goes
to ``$LAMBDA_DEMO_HOME/logs/cli.log``, and to the console as well with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from lambda_demo.clients.dialect import DIALECTS
from lambda_demo.errors import SparkQueryError, explain
from lambda_demo.view import MEASURE_NAMES

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
    from lambda_demo.ingestion import sample

    counts = sample.write(args.out, tweets=args.tweets, days=args.days, seed=args.seed)
    print(json.dumps(counts))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from lambda_demo.ingestion.replay import replay

    counts = replay(
        args.file or None,
        speedup=args.speedup,
        start=args.start,
        loop=args.loop,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(counts.as_dict()))
    else:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(counts.reasons.items())) or "none"
        print(
            f"replay: read {counts.read}, produced {counts.produced}, "
            f"dead-lettered {counts.dead_lettered} ({reasons})"
        )
    return 0 if counts.failed == 0 else 1


def _live(args: argparse.Namespace) -> int:
    from lambda_demo.ingestion.live import live

    counts = live(sample=args.sample)
    print(json.dumps(counts.as_dict()))
    return 0


def _xapi(args: argparse.Namespace) -> int:
    from lambda_demo.ingestion.xapi import serve

    server = serve(args.file or None, speedup=args.speedup, port=args.port, once=args.once)
    print(
        f"xapi: X API v2 streams at {server.url} (LAMBDA_DEMO_X_API_URL={server.url}); "
        "playback starts when the first client connects",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM is how a server without --once stops
    finally:
        server.stop()
    print(
        f"xapi: played {server.played} lines; sent {len(server.sent)} over "
        f"{server.connections} stream connection(s)"
    )
    return 0


def _batch(args: argparse.Namespace) -> int:
    from lambda_demo.batch.run import run_batch

    print(run_batch(cutoff=args.cutoff, only=args.only))
    return 0


def _speed(args: argparse.Namespace) -> int:
    from lambda_demo.settings import get_settings
    from lambda_demo.speed.run import run_speed

    log = get_settings().log_file("spark")
    until = "until the topic is drained" if args.once else "until Ctrl-C"
    print(f"speed layer running {until}; Spark's own log: {log}", flush=True)
    run_speed(once=args.once, trigger_seconds=args.trigger_seconds)
    return 0


def _query(args: argparse.Namespace) -> int:
    from lambda_demo.serving import reads

    frame = reads.top(args.top, by=args.by) if args.top is not None else reads.serving_view()
    if args.top is None:
        frame = frame.sort_values([args.by, "location"], ascending=[False, True])
    if args.json:
        print(json.dumps(frame.to_dict(orient="records"), ensure_ascii=False, default=int))
    else:
        print(frame.to_string(index=False))
    return 0


def _check(args: argparse.Namespace) -> int:
    from lambda_demo.serving.check import check

    result = check(progress=not args.json)
    print(result.to_json() if args.json else result)
    return 0 if result.ok else 1


def _status(args: argparse.Namespace) -> int:
    from lambda_demo.status import render, status

    figures = status()
    print(json.dumps(figures) if args.json else render(figures))
    return 0


def _sql(args: argparse.Namespace) -> int:
    from lambda_demo.settings import get_settings
    from lambda_demo.statements import render_sections, sections

    dialect = args.dialect or get_settings().warehouse_dialect
    print(render_sections(sections(dialect)), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lambda_demo.tutorial.demo import run_demo

    result = run_demo(speedup=args.speedup) if args.speedup else run_demo()
    return 0 if result.check.ok else 1


def _prefetch(args: argparse.Namespace) -> int:
    from lambda_demo.stack.prefetch import prefetch

    for item in prefetch():
        print(item, flush=True)
    print("prefetch: done - the tutorial now runs without network")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from lambda_demo.stack.doctor import doctor, use_colour

    colour = use_colour(sys.stdout)
    reds = 0
    for verdict in doctor(quick=args.quick):
        reds += not verdict.ok
        print(verdict.render(colour=colour), flush=True)
    print(f"doctor: {reds} problem(s) to fix" if reds else "doctor: all good")
    return 1 if reds else 0


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``, refused in words."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


_positive_int = _whole(1)


def _number(*, minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a number above (or at) ``minimum``, refused in words."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum) or value != value:
            bound = f"{minimum:g} or more" if inclusive else f"more than {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: write it as YYYY-MM-DD, for example 2024-03-01"
        ) from None


def _iso_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date and time: write it as ISO 8601, "
            "for example 2024-03-01T09:30:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-demo",
        description="The Lambda Architecture on a stream of tweets: Kafka, S3, Spark, SQL.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks"
    )
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
    gen.add_argument("--tweets", type=_whole(0), default=30_000)
    gen.add_argument("--days", type=_whole(1), default=3)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", type=Path, required=True, help="*.jsonl or *.jsonl.gz")
    sample.set_defaults(handler=_sample)

    rp = commands.add_parser("replay", help="play recorded tweets into Kafka on a simulated clock")
    rp.add_argument("--file", type=Path, action="append", help="JSONL(.gz); default: the sample")
    rp.add_argument(
        "--speedup", type=_number(minimum=0), default=0.0, help="X times real time; 0 = max speed"
    )
    rp.add_argument("--start", type=_iso_datetime, help="simulated start (default: first tweet)")
    rp.add_argument("--loop", action="store_true", help="replay forever, shifted in time")
    rp.add_argument("--json", action="store_true", help="print one JSON object of counts")
    rp.set_defaults(handler=_replay)

    lv = commands.add_parser("live", help="stream live tweets with tweepy (needs a bearer token)")
    lv.add_argument("--sample", action="store_true", help="the volume stream: all, no rules")
    lv.set_defaults(handler=_live)

    xa = commands.add_parser("xapi", help="a local X API v2 stream server, for live offline")
    xa_actions = xa.add_subparsers(dest="action", required=True, metavar="ACTION")
    xs = xa_actions.add_parser("serve", help="serve recorded tweets on the X API's streams")
    xs.add_argument("--file", type=Path, action="append", help="JSONL(.gz); default: the sample")
    xs.add_argument(
        "--speedup", type=_number(minimum=0), default=0.0, help="X times real time; 0 = as read"
    )
    xs.add_argument("--port", type=_whole(0), default=0, help="port on 127.0.0.1 (default: any)")
    xs.add_argument("--once", action="store_true", help="exit once the files are played")
    xa.set_defaults(handler=_xapi)

    bt = commands.add_parser("batch", help="archive Kafka to S3, load the warehouse, recompute")
    bt.add_argument("--cutoff", type=_iso_date, help="day D (default: pipeline clock)")
    bt.add_argument(
        "--only", choices=["archive", "load", "recompute"], help="run just this one step"
    )
    bt.set_defaults(handler=_batch)

    sp = commands.add_parser("speed", help="run the Spark streaming speed layer")
    sp.add_argument("--once", action="store_true", help="process what is available, then exit")
    sp.add_argument(
        "--trigger-seconds",
        type=_number(minimum=0, inclusive=False),
        help="micro-batch interval (default 2)",
    )
    sp.set_defaults(handler=_speed)

    qr = commands.add_parser("query", help="read the serving view")
    qr.add_argument("--top", type=_positive_int, help="only the N largest locations")
    qr.add_argument("--by", default="tweet_count", choices=MEASURE_NAMES, help="sort measure")
    qr.add_argument("--json", action="store_true", help="a JSON array of location objects")
    qr.set_defaults(handler=_query)

    ck = commands.add_parser("check", help="recompute from Kafka and compare with serving")
    ck.add_argument("--json", action="store_true", help="one JSON object with the mismatches")
    ck.set_defaults(handler=_check)

    stt = commands.add_parser("status", help="where the data is, layer by layer")
    stt.add_argument("--json", action="store_true", help="one JSON object, one key per layer")
    stt.set_defaults(handler=_status)

    sq = commands.add_parser("sql", help="print every SQL statement the pipeline issues")
    sq.add_argument(
        "--dialect",
        choices=DIALECTS,
        help="the warehouse's SQL dialect (default: LAMBDA_DEMO_WAREHOUSE_DIALECT, or postgres)",
    )
    sq.set_defaults(handler=_sql)

    dm = commands.add_parser("demo", help="the whole Lambda loop over the sample's days")
    dm.add_argument(
        "--speedup",
        type=_number(minimum=0, inclusive=False),
        help="simulated seconds per second (default: a simulated day in 8 s)",
    )
    dm.set_defaults(handler=_demo)

    pf = commands.add_parser("prefetch", help="download every jar the tutorial needs, once")
    pf.set_defaults(handler=_prefetch)

    dr = commands.add_parser("doctor", help="pre-flight checklist for a workshop participant")
    dr.add_argument("--quick", action="store_true", help="skip the replay-speed-batch round trip")
    dr.set_defaults(handler=_doctor)
    return parser


# Libraries whose log lines are for the log file: kafka-python logs an ERROR per refused
# reconnect, py4j its connection life cycle. The console shows them with -v.
_FILE_ONLY = ("kafka", "py4j")


def _configure_logging(verbose: bool) -> Path | None:
    """Console: warnings (INFO with -v). File ``<home>/logs/cli.log``: INFO and tracebacks.

    Returns the log file, or None if it cannot be opened (then the console is all there is).
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # This module's own records (the command line, a failure's traceback) are for the file;
    # the console gets the failure in words from `_fail`.
    console.addFilter(lambda record: record.name != __name__)
    if not verbose:
        console.addFilter(lambda record: not record.name.startswith(_FILE_ONLY))
    root.addHandler(console)
    for name in _FILE_ONLY:
        logging.getLogger(name).setLevel(logging.WARNING)  # both are chatty at INFO
    try:
        from lambda_demo.settings import get_settings

        path = get_settings().log_file("cli")
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=1, encoding="utf-8"
        )
    except Exception:  # unreadable settings or a read-only home: reported by the command
        return None
    file.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(file)
    return path


def _fail(exc: Exception, *, command: list[str], verbose: bool, log: Path | None) -> int:
    """Report a failure: its traceback to the log (and with -v the console), then in words."""
    logger = logging.getLogger(__name__)
    logger.error("lambda-demo %s failed", " ".join(command), exc_info=exc)
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    try:
        error = explain(exc)
    except Exception:  # never let the explanation hide the failure
        logger.exception("could not explain the failure")
        error = None
    where = f"in {log}" if log else "shown by `-v`"
    if error is None:  # not a failure we know: a bug, worth a report with its traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        print(f"  this is a bug; the traceback is {where}", file=sys.stderr)
        return 1
    print(f"error: {error}", file=sys.stderr)
    if isinstance(error, SparkQueryError) and not verbose:
        print(f"  the full error is {where}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    command = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(command)
    log = _configure_logging(args.verbose)
    logging.getLogger(__name__).info("lambda-demo %s", " ".join(command))
    handler: Handler = args.handler
    # SIGTERM (docker stop, kill) stops as cleanly as Ctrl-C: committed work stays committed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _fail(exc, command=command, verbose=args.verbose, log=log)


if __name__ == "__main__":
    sys.exit(main())
