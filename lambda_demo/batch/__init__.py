"""The batch layer: recompute the view from the immutable master dataset, from scratch.

Three steps, each safe to repeat, run by `lambda_demo.batch.run.run_batch`:

1. `archiver` copies new Kafka records into S3, the **master dataset**: append-only objects
   named by their offset range, so a re-run rewrites nothing and skips nothing.
2. `loader` copies new S3 objects into the warehouse table ``raw_tweets`` (and contract
   breakers into ``quarantine``), one transaction per object.
3. `recompute` rebuilds the batch view from every loaded row, deduplicated, for the days
   before the cutoff D, and swaps it in atomically.

Recomputing from all history each run is the Lambda Architecture's answer to mistakes: fix
the code, run the batch again, and the view is right, whatever the old code got wrong.
"""
