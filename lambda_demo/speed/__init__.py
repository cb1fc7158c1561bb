"""The speed layer: Spark Structured Streaming over what the batch layer has not absorbed yet.

* `stream` defines it: read Kafka, validate, deduplicate within the watermark, aggregate each
  micro-batch's new tweets per (ingest day, location), with the same measures as the batch view.
* `sink` writes it: exact additions to ``speed_view`` under a deployment id, the quarantine,
  and the take-over of a redeployed query.
* `run` starts, watches and stops its streaming query (``lambda-demo speed``).
"""
