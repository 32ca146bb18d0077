"""``moi-table RUNS_DIR`` (``python -m harness.table``): the results table of every run under a folder.

    moi-table results/runs                  # writes results/runs/table.md and table.csv
    moi-table results/runs out=reports/     # elsewhere
    moi-table results/demo behaviour=true examples=1   # also what the methods do to the text

See :mod:`harness.analysis.table` for what the table holds, :mod:`harness.analysis.behaviour` for
the behaviour table and the examples. Settings: ``configs/table.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.analysis import behaviour
from harness.analysis.table import build
from harness.cli.common import compose, one_line_errors, runs_folder, split_args, wants_help


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv, __doc__):
        return 0
    plain, settings = split_args(argv, {"out": "out"})
    cfg = compose("table", settings)
    runs_dir = runs_folder("moi-table", plain, cfg["runs_dir"])
    markdown, frame = build(runs_dir)
    out = Path(cfg["out"]) if cfg["out"] else runs_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown)
    frame.to_csv(out / "table.csv", index=False, float_format="%.4f", lineterminator="\n")
    print(markdown, end="")
    print(f"wrote {out / 'table.md'} and {out / 'table.csv'}", file=sys.stderr)
    if cfg["behaviour"] or cfg["examples"]:
        samples = behaviour.load(runs_dir)
    if cfg["behaviour"]:
        frame = behaviour.table(samples)
        markdown = behaviour.to_markdown(frame)
        (out / "behaviour.md").write_text(markdown)
        frame.to_csv(out / "behaviour.csv", index=False, float_format="%.4f", lineterminator="\n")
        print("\n" + markdown, end="")
        print(f"wrote {out / 'behaviour.md'} and {out / 'behaviour.csv'}", file=sys.stderr)
        hist = behaviour.step_histograms(samples)
        if not hist.empty:
            markdown = behaviour.step_markdown(hist)
            (out / "steps.md").write_text(markdown)
            hist.to_csv(out / "steps.csv", index=False, float_format="%.4f", lineterminator="\n")
            behaviour.step_figure(hist, out / "steps.png")
            print("\n" + markdown, end="")
            print(f"wrote {out / 'steps.md'}, {out / 'steps.csv'} and {out / 'steps.png'}", file=sys.stderr)
    if cfg["examples"]:
        text = behaviour.examples(samples, per_task=int(cfg["examples"]))
        (out / "examples.txt").write_text(text)
        print("\n" + text, end="")
        print(f"wrote {out / 'examples.txt'}", file=sys.stderr)
    return 0
