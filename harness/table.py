"""``python -m harness.table``: the same command as ``moi-table`` (:mod:`harness.cli.table`)."""

import sys

from harness.cli.table import main

if __name__ == "__main__":
    sys.exit(main())
