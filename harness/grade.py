"""``python -m harness.grade``: the same command as ``moi-grade`` (:mod:`harness.cli.grade`)."""

import sys

from harness.cli.grade import main

if __name__ == "__main__":
    sys.exit(main())
