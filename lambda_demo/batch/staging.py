"""The staged copy of each archive object: its records judged once, ready for ``COPY``.

Judging a million archived records (JSON, the contract, then CSV text) is most of what a load
used to do, and it did it again on every reload. So, like Redshift's staged files, each raw
object of the master dataset gets a **derived** copy, written right after it at archive time:

* ``staging/raw_tweets/<raw key>`` (``.csv.gz`` for PostgreSQL, the raw key itself for the
  ``redshift`` dialect): the object's valid records as ``raw_tweets`` rows, in the format the
  warehouse's ``COPY`` reads (CSV streamed from the client; gzipped JSON lines that Redshift's
  ``COPY ... FROM 's3://...'`` reads itself);
* ``staging/manifests/<raw key>.json``: what the rows were built from and by what (the raw
  object's SHA-256, the columns, the dialect, a fingerprint of the rules), the SHA-256 of the
  rows object, and the object's quarantined records with their reasons.

The raw objects stay the master dataset; a staged copy is a cache of a pure function of one of
them (`build`), judged by the one contract (`lambda_demo.contract.parse_record`). The loader
trusts it only when its manifest says it was built from the very bytes of the raw object now
in S3, for the current columns, dialect and rules, and the rows object has the SHA-256 the
manifest names (`check`); anything else (missing, truncated, stale) is rebuilt from the raw
object, never skipped.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from operator import attrgetter, itemgetter
from pathlib import Path

from lambda_demo import contract
from lambda_demo.clients import warehouse
from lambda_demo.contract import Rejected, ingest_day_of, ingest_time, parse_record
from lambda_demo.ingestion.clock import from_millis, to_millis

ROWS_PREFIX = "staging/raw_tweets/"
MANIFEST_PREFIX = "staging/manifests/"
FORMAT = 1
"""Bump when the layout of a staged object changes: every older one is then rebuilt."""
GZIP_LEVEL = 1
"""Staged rows are read once per load and rebuilt at will: the fastest gzip level."""

RULES = hashlib.sha256(
    Path(contract.__file__).read_bytes() + Path(__file__).read_bytes()
).hexdigest()[:16]
"""Which code judged a staged object: the contract's and this module's source. A fixed rule
makes every staged object stale, so the next load rebuilds them from the master dataset."""

Row = tuple[object, ...]
"""One ``raw_tweets`` row, values in `raw_columns` order."""

Delivery = tuple[int, int, int, bytes | None]
"""One archived Kafka record as staging needs it: (partition, offset, timestamp ms, value)."""


def raw_columns() -> tuple[str, ...]:
    """The columns of ``raw_tweets`` the loader fills: all of them, as the warehouse defines
    them, so a field a new measure reads is loaded without a change here."""
    return tuple(warehouse.raw_tweets_columns())


@dataclass(frozen=True)
class Quarantined:
    """A record that broke the contract: where it was, why, and its bytes."""

    partition: int
    offset: int
    ingest_ts: datetime | None  # None: a timestamp no tweet can have
    reason: str
    raw_value: bytes | None


_COORDINATES = ("ingest_ts", "ingest_day", "kafka_partition", "kafka_offset", "object_key")
"""The columns that say where a delivery was; every other column is a contract field."""


def judge(
    deliveries: Iterable[Delivery], *, object_key: str
) -> tuple[list[Row], list[Quarantined]]:
    """Split archived records into ``raw_tweets`` rows and quarantined records, by the
    contract (`parse_record`, the function every layer judges a Kafka record with)."""
    columns = raw_columns()
    fields = [c for c in columns if c not in _COORDINATES]
    field_values = attrgetter(*fields) if len(fields) > 1 else lambda f: (getattr(f, fields[0]),)
    # Each column's place in (coordinates + contract fields), in column order.
    in_order = itemgetter(*[(*_COORDINATES, *fields).index(c) for c in columns])
    rows: list[Row] = []
    rejected: list[Quarantined] = []
    for partition, offset, ms, value in deliveries:
        flat = parse_record(value, ms)
        if flat.__class__ is Rejected:
            rejected.append(Quarantined(partition, offset, ingest_time(ms), flat.reason, value))  # type: ignore[union-attr]
            continue
        ingest_ts = from_millis(ms)
        coordinates = (ingest_ts, ingest_day_of(ingest_ts), partition, offset, object_key)
        rows.append(in_order(coordinates + field_values(flat)))
    return rows, rejected


def csv_rows(rows: list[Row]) -> str:
    """Rows as PostgreSQL CSV: every string quoted, so ``""`` is an empty string, not NULL.

    Python's ``csv`` module cannot tell None from "" (both come out the same), so the few
    rules are written out here: NULL is an unquoted empty field; a quoted field may hold
    commas, quotes (doubled), newlines, ``\\.`` and emoji, all taken literally.
    """
    field = _csv_field
    return "".join([",".join([field(value) for value in row]) + "\n" for row in rows])


def _csv_field(value: object) -> str:
    kind = value.__class__
    if kind is str:
        return '"' + value.replace('"', '""') + '"'  # type: ignore[attr-defined]
    if kind is int:
        return str(value)
    if value is None:
        return ""
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '""') + '"'


def redshift_staging_lines(rows: list[Row]) -> bytes:
    """Rows as JSON lines keyed by column name, the layout Redshift's ``JSON 'auto'`` reads."""
    columns = raw_columns()
    out = io.BytesIO()
    for row in rows:
        record = {
            name: _redshift_json_value(value) for name, value in zip(columns, row, strict=True)
        }
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        out.write(b"\n")
    return out.getvalue()


def _redshift_json_value(value: object) -> object:
    if isinstance(value, datetime):
        return to_millis(value)  # read back with TIMEFORMAT 'epochmillisecs'
    if isinstance(value, date):
        return value.isoformat()
    return value


def rows_key(raw_key: str, dialect: str) -> str:
    """Where the staged rows of ``raw_key`` are: the key Redshift's ``COPY`` reads, or the
    CSV that PostgreSQL's ``COPY ... FROM STDIN`` is fed."""
    if dialect == "redshift":
        return ROWS_PREFIX + raw_key
    return ROWS_PREFIX + raw_key.removesuffix(".jsonl.gz") + ".csv.gz"


def manifest_key(raw_key: str) -> str:
    return MANIFEST_PREFIX + raw_key.removesuffix(".jsonl.gz") + ".json"


class StaleStaging(Exception):
    """A staged copy that cannot be used as it is; the message says why (it is rebuilt)."""


class OutdatedStaging(StaleStaging):
    """A sound staged copy made for other columns, dialect or rules: expected after a measure
    is added or the contract changes, so it is rebuilt without a warning."""


@dataclass(frozen=True)
class Staged:
    """The staged copy of one raw object: its rows object (gzipped) and its manifest."""

    rows_key: str
    rows_body: bytes
    manifest: dict[str, object]

    @property
    def row_count(self) -> int:
        return int(self.manifest["rows"])  # type: ignore[call-overload]

    def quarantined(self) -> list[Quarantined]:
        """The quarantined records the manifest keeps, as the loader writes them."""
        entries: list[list[object]] = self.manifest["quarantine"]  # type: ignore[assignment]
        return [
            Quarantined(
                partition,  # type: ignore[arg-type]
                offset,  # type: ignore[arg-type]
                None if ms is None else from_millis(ms),  # type: ignore[arg-type]
                reason,  # type: ignore[arg-type]
                _from_text(text, b64),  # type: ignore[arg-type]
            )
            for partition, offset, ms, reason, text, b64 in entries
        ]

    def manifest_bytes(self) -> bytes:
        return _canonical(self.manifest)


def build(deliveries: Iterable[Delivery], *, raw_key: str, raw_sha256: str, dialect: str) -> Staged:
    """The staged copy of the raw object ``raw_key`` (whose bytes have ``raw_sha256``).

    Deterministic: the same records give the same bytes, whether they come from Kafka at
    archive time or from the raw object when a staged copy is rebuilt.
    """
    rows, rejected = judge(deliveries, object_key=raw_key)
    body = redshift_staging_lines(rows) if dialect == "redshift" else csv_rows(rows).encode()
    rows_body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    key = rows_key(raw_key, dialect)
    manifest: dict[str, object] = {
        **_identity(raw_key, dialect),
        "source_sha256": raw_sha256,
        "rows_key": key,
        "rows_sha256": hashlib.sha256(rows_body).hexdigest(),
        "rows": len(rows),
        "quarantine": [
            [
                q.partition,
                q.offset,
                None if q.ingest_ts is None else to_millis(q.ingest_ts),
                q.reason,
                *_as_text(q.raw_value),
            ]
            for q in rejected
        ],
    }
    manifest["sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    return Staged(key, rows_body, manifest)


def read_manifest(raw_key: str, body: bytes, *, raw_sha256: str, dialect: str) -> dict[str, object]:
    """The manifest of ``raw_key``'s staged copy, or `StaleStaging` saying why it cannot be
    used: unreadable, altered, or built from other bytes, columns, dialect or rules."""
    try:
        manifest = json.loads(body)
        claimed = manifest.pop("sha256")
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise StaleStaging(f"the manifest of {raw_key} is unreadable ({exc})") from exc
    if hashlib.sha256(_canonical(manifest)).hexdigest() != claimed:
        raise StaleStaging(f"the manifest of {raw_key} is not what was written")
    manifest["sha256"] = claimed
    for name, wanted in _identity(raw_key, dialect).items():
        if manifest.get(name) != wanted:
            raise OutdatedStaging(f"{raw_key}: its staged rows were made for other {name}")
    if manifest.get("source_sha256") != raw_sha256:
        raise StaleStaging(f"{raw_key}: its staged rows belong to other raw bytes")
    return manifest


def check_rows(manifest: dict[str, object], rows_body: bytes) -> Staged:
    """The staged copy, once its rows object is the one the manifest names."""
    if hashlib.sha256(rows_body).hexdigest() != manifest["rows_sha256"]:
        raise StaleStaging(
            f"{manifest['source']}: its staged rows {manifest['rows_key']} are not what its "
            "manifest says was written"
        )
    return Staged(str(manifest["rows_key"]), rows_body, manifest)


def _identity(raw_key: str, dialect: str) -> dict[str, object]:
    """What a staged copy must have been built for to be used for ``raw_key`` now."""
    return {
        "format": FORMAT,
        "rules": RULES,
        "dialect": dialect,
        "columns": list(raw_columns()),
        "source": raw_key,
    }


def _canonical(manifest: dict[str, object]) -> bytes:
    return json.dumps(manifest, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _as_text(value: bytes | None) -> tuple[str | None, bool]:
    """(text, is base64): UTF-8 values as text, anything else in base64."""
    if value is None:
        return None, False
    try:
        return value.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), True


def _from_text(text: str | None, b64: bool) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text) if b64 else text.encode("utf-8")
