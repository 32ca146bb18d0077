"""The pipeline: a resolved config becomes a run directory of generated, graded samples.

config (checks) -> identity (the run directory) -> grid (many runs from one job) -> plan (what is
missing) -> runner (one engine, a grading pool) -> records, summary and manifest in storage.
"""
