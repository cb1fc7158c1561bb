"""The serving layer: the batch view before the cutoff plus the speed view from it, as one.

`reads` queries the merged view; `check` recomputes it from Kafka, independently, and says
whether the two agree.
"""
