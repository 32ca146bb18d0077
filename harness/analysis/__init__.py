"""The analysis layer: tables and figures from stored run directories only (no engine, no GPU).

runs (run directories as pandas frames) -> selection (configurations chosen as the paper did) ->
table (the results table) and paper (the paper's tables beside the published numbers, figures).
"""
