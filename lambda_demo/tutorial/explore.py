"""Small windows into the running pipeline, for the notebooks.

The layers themselves never need these: they exist so a learner can *look* at what each
layer wrote (Kafka records, S3 objects, warehouse rows) as a pandas DataFrame, in one call
instead of ten lines of client code that would hide the point of the cell. Every path a
helper prints is relative to the repository, so committed notebook outputs stay free of
local paths; nothing here prints a credential.

Two helpers change state, and only under names they are given: `sample_file` writes a
generated stream into the git-ignored ``$LAMBDA_DEMO_HOME``, and `reset_namespace` wipes one
namespace (topics, bucket objects, schema, checkpoints) so notebook 05 can run the whole loop
from an empty pipeline.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import re
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lambda_demo.clients import kafka_io, storage, warehouse
from lambda_demo.contract import served_by_batch
from lambda_demo.ingestion.clock import from_millis, wait_until
from lambda_demo.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from pyspark.sql import DataFrame

    from lambda_demo.stack.manager import ServiceStatus

logger = logging.getLogger(__name__)


def setup_notebook() -> None:
    """Display and logging defaults, set once at the top of every notebook.

    Wide tables without wrapping, a readable plot size, and only warnings from the libraries
    (Kafka's client and py4j log every connection at INFO, which buries the outputs).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    pd.set_option("display.max_columns", 20)
    pd.set_option("display.width", 120)
    pd.set_option("display.max_colwidth", 60)
    plt.rcParams["figure.figsize"] = (10, 4)
    plt.rcParams["figure.dpi"] = 90
    # Locations are free text in many scripts: matplotlib falls back, glyph by glyph, along
    # this list (see GLYPH_FONTS); a glyph no installed font has is drawn as an empty box.
    plt.rcParams["font.family"] = ["DejaVu Sans", *installed_glyph_fonts()]
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    warnings.filterwarnings("ignore", message="findfont: Font family")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("py4j", "botocore", "urllib3", "matplotlib.font_manager"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # kafka-python logs every refused connection at ERROR, including the expected ones while
    # `stack.up()` waits for a starting broker; real failures still raise exceptions.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Environment warnings (a missing XDG_RUNTIME_DIR, ...) would print local paths.
    warnings.filterwarnings("ignore", module="platformdirs")
    # tqdm.auto (imported by the replay and check modules) asks for ipywidgets in a notebook;
    # the notebooks pass progress=False everywhere, so plain outputs need no widget.
    warnings.filterwarnings("ignore", message="IProgress not found")


GLYPH_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "IPAexGothic", "Noto Emoji", "Symbola")
"""Fonts for the glyphs DejaVu Sans lacks (CJK, emoji), in the order matplotlib tries them.

Any one of them is enough for its script: the Noto CJK fonts (Debian ``fonts-noto-cjk``, or
the OS's own), IPAexGothic (``pip install matplotlib-fontja``, Japanese kanji and kana),
Noto Emoji or Symbola (``fonts-symbola``: monochrome emoji; matplotlib cannot draw colour
emoji fonts). Without them a location such as "東京" or "🌎" shows as boxes in figures;
tables and text outputs are not affected.
"""


def installed_glyph_fonts() -> list[str]:
    """The `GLYPH_FONTS` matplotlib can find here (a missing one would warn at every figure)."""
    from matplotlib import font_manager

    with contextlib.suppress(ImportError):  # registers IPAexGothic with matplotlib
        import matplotlib_fontja  # noqa: F401
    names = {font.name for font in font_manager.fontManager.ttflist}
    return [name for name in GLYPH_FONTS if name in names]


def relative(path: Path | str) -> str:
    """``path`` relative to the repository when inside it, so outputs hold no local paths."""
    path = Path(path)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO_ROOT.resolve()))
    return path.name


def status_table(statuses: list[ServiceStatus]) -> pd.DataFrame:
    """``stack.status()`` as a table: service, address, version, up (no secrets in it)."""
    import pandas as pd

    rows = [
        {"service": s.name, "address": s.address, "version": s.version, "up": s.up}
        for s in statuses
    ]
    return pd.DataFrame(rows).set_index("service")


def topic_offsets(topic: str | None = None, *, settings: Settings | None = None) -> pd.DataFrame:
    """Per partition of ``topic``: first and next offset, so ``records = end - begin``."""
    import pandas as pd

    settings = settings or get_settings()
    offsets = kafka_io.partition_offsets(settings, topic or settings.topic)
    rows = [
        {"partition": partition, "begin": begin, "end": end, "records": end - begin}
        for partition, (begin, end) in offsets.items()
    ]
    return pd.DataFrame(rows).set_index("partition")


def peek_topic(
    topic: str | None = None,
    *,
    limit: int = 5,
    partition: int | None = None,
    from_offset: int = 0,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The first ``limit`` records of each partition (or one partition) as a DataFrame.

    Columns are what a consumer sees: partition, offset, the record timestamp (here the
    ingest time), the key, the value as text and the headers. Read with ``assign`` + ``seek``
    and no consumer group, so peeking changes nobody's committed offsets.
    """
    import pandas as pd

    settings = settings or get_settings()
    topic = topic or settings.topic
    consumer = kafka_io.consumer(settings)
    rows: list[dict[str, object]] = []
    with contextlib.closing(consumer):
        offsets = kafka_io.partition_offsets(settings, topic, consumer=consumer)
        for number, (_, end) in offsets.items():
            if partition in (None, number):
                stop = min(end, from_offset + limit)
                records = kafka_io.read_range(
                    settings, topic, number, from_offset, stop, consumer=consumer
                )
                rows.extend(_record_row(record) for record in records)
    columns = ["partition", "offset", "timestamp", "key", "value", "headers"]
    return pd.DataFrame(rows, columns=columns)


def _record_row(record) -> dict[str, object]:
    return {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": from_millis(record.timestamp),
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
        "value": record.value.decode("utf-8", "replace") if record.value is not None else None,
        "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers or []},
    }


def dead_letters(*, settings: Settings | None = None, limit: int = 10_000) -> pd.DataFrame:
    """Records of the dead-letter topic with the ``reason`` and ``detail`` headers as columns."""
    settings = settings or get_settings()
    frame = peek_topic(settings.dlq_topic, limit=limit, settings=settings)
    frame["reason"] = [h.get("reason") for h in frame["headers"]]
    frame["detail"] = [h.get("detail") for h in frame["headers"]]
    return frame[["partition", "offset", "timestamp", "reason", "detail", "value"]]


def list_objects(prefix: str = "", *, settings: Settings | None = None) -> pd.DataFrame:
    """Every object under ``prefix`` in the bucket: key, size in bytes, last modified."""
    import pandas as pd

    settings = settings or get_settings()
    client = storage.s3_client(settings)
    rows = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix=prefix
    )
    for page in pages:
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):  # directory markers of filesystem-backed S3
                rows.append({"key": item["Key"], "size_bytes": item["Size"]})
    return pd.DataFrame(rows, columns=["key", "size_bytes"])


def read_object_lines(
    key: str, *, limit: int = 5, settings: Settings | None = None
) -> pd.DataFrame:
    """The first ``limit`` JSON lines of a gzipped master-dataset object, as a DataFrame."""
    import pandas as pd

    settings = settings or get_settings()
    body = storage.s3_client(settings).get_object(Bucket=settings.s3_bucket, Key=key)["Body"]
    lines = gzip.decompress(body.read()).split(b"\n")
    return pd.DataFrame([json.loads(line) for line in lines[:limit] if line])


def plan_operators(frame: DataFrame) -> list[str]:
    """The operators of Spark's physical plan for ``frame``, from the sink down to the source.

    What Spark will run, read from Spark itself (``explain``): a step a query forgot, such as
    the deduplication, is missing from this list whatever its code looks like.
    """
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        frame.explain()
    operators = []
    for line in printed.getvalue().splitlines():
        match = _OPERATOR.match(line)
        if match and not line.startswith("=="):
            operators.append(match.group(1))
    return operators


_OPERATOR = re.compile(r"^[\s:|+\-*]*(?:\(\d+\)\s*)?([A-Z][A-Za-z]+)")


def sql(query: str, params: tuple | dict | None = None, *, settings: Settings | None = None):
    """Run one read-only query in the warehouse and return the rows as a DataFrame."""
    return warehouse.fetch_frame(query, params, settings=settings)


def sample_file(
    name: str,
    *,
    tweets: int,
    days: int,
    seed: int,
    start: datetime,
    settings: Settings | None = None,
) -> Path:
    """A generated sample under ``$LAMBDA_DEMO_HOME/samples`` (written once; deterministic).

    Notebooks need small extra streams; keeping them in the git-ignored home means a notebook
    run leaves no stray files in the repository.
    """
    from lambda_demo.ingestion import sample

    settings = settings or get_settings()
    path = settings.home / "samples" / name
    if not path.exists():
        sample.write(path, tweets=tweets, days=days, seed=seed, start=start)
    return path


def reset_namespace(settings: Settings, *, timeout_seconds: float = 60.0) -> None:
    """Delete one pipeline's topics, objects, warehouse schema and checkpoints, then recreate.

    Only the names in ``settings`` are touched, so another namespace on the same stack (the
    default one used by notebooks 01-04) keeps its data. Kafka deletes topics
    asynchronously, so this waits until they are gone before creating them again.
    """
    from kafka.errors import UnknownTopicOrPartitionError
    from psycopg2 import sql as pgsql

    topics = [settings.topic, settings.dlq_topic]
    client = kafka_io.admin(settings)
    with contextlib.closing(client):
        present = [t for t in topics if t in set(client.list_topics())]
        if present:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                client.delete_topics(present)
        wait_until(
            lambda: not set(topics) & set(client.list_topics()),
            timeout_seconds,
            f"Kafka to delete the topics {present}",
            hint="Is the broker up? (`lambda-demo stack status`)",
        )
    s3 = storage.s3_client(settings)
    storage.ensure_bucket(settings)
    for key in list_objects(settings=settings)["key"]:
        s3.delete_object(Bucket=settings.s3_bucket, Key=key)
    conn = warehouse.connect(settings, autocommit=True)
    try:
        with conn.cursor() as cur:
            schema = pgsql.Identifier(settings.warehouse_schema)
            cur.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    finally:
        conn.close()
    storage.delete_checkpoints(settings.checkpoints, settings)
    _create_topics(settings, timeout_seconds=timeout_seconds)
    warehouse.ensure_schema(settings)


def _create_topics(settings: Settings, *, timeout_seconds: float) -> None:
    """``ensure_topics``, repeated until both topics exist (a deletion may still finish)."""
    wanted = {settings.topic, settings.dlq_topic}

    def created() -> bool:
        with contextlib.suppress(Exception):  # a deletion may still be finishing: try again
            kafka_io.ensure_topics(settings)
            client = kafka_io.admin(settings)
            with contextlib.closing(client):
                return wanted <= set(client.list_topics())
        return False

    wait_until(
        created,
        timeout_seconds,
        f"Kafka to create the topics {sorted(wanted)}",
        hint="Is the broker up? (`lambda-demo stack status`)",
        interval_seconds=1.0,
    )


def day_boundary_figure(days: list[str], cutoff: str) -> Figure:
    """Ingest days on a line, coloured by the layer that serves them for cutoff day D.

    The picture behind the serving view's one rule: batch for days < D, speed for days >= D.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 1.8))
    for index, day in enumerate(days):
        batch = served_by_batch(date.fromisoformat(day), date.fromisoformat(cutoff))
        ax.barh(0, 1, left=index, color="#DD8452" if batch else "#55A868", edgecolor="white")
        layer = "batch view" if batch else "speed view"
        ax.text(index + 0.5, 0, f"{day}\n{layer}", ha="center", va="center", color="white")
    position = sorted([*days, cutoff]).index(cutoff)
    ax.axvline(position, color="black", linestyle="--")
    ax.text(
        position,
        0.6,
        f"cutoff D = {cutoff}",
        ha="center",
        bbox={"facecolor": "white", "edgecolor": "none"},
    )
    ax.set_xlim(0, len(days))
    ax.set_ylim(-0.5, 0.8)
    ax.axis("off")
    ax.set_title("A record's day is the UTC day of its Kafka ingest timestamp")
    fig.tight_layout()
    return fig
