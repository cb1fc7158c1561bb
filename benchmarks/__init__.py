"""Benchmarks for lambda-demo: ``python -m benchmarks [--quick] [--only NAME]``.

Every figure is a ratio against a baseline measured side by side in the same run, on a
private embedded stack in a fresh home, repeated (min and median kept). The machine this
runs on may be shared and noisy; ratios survive that, absolute numbers do not.
"""
