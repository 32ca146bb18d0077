"""``python -m harness.paper``: the same command as ``moi-paper`` (:mod:`harness.cli.paper`)."""

import sys

from harness.cli.paper import main

if __name__ == "__main__":
    sys.exit(main())
