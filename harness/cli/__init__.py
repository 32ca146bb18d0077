"""Entry points: ``moi-run``, ``moi-grade``, ``moi-table``, ``moi-paper``, ``moi-serve``.

Each parses its settings, calls the pipeline or the analysis layer, and turns a user error into
one line. ``python -m harness.run`` (``.grade``, ``.table``, ``.paper``, ``.serve``) runs the same
commands.
"""
