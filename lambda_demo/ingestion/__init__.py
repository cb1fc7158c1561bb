"""Ingestion: tweets into Kafka, under the one contract every layer applies.

`sample` makes the sample tweets, `clock` gives replayed records their simulated ingest
time, `handler` is the one path from a tweet to the ``tweets`` topic (or its dead-letter
topic) that both `replay` (files) and `live` (the X API's filtered stream) share. `xapi` is
a local stand-in for the X API's streams, so `live` runs offline too.
"""
