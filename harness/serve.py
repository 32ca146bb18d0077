"""``python -m harness.serve``: the same command as ``moi-serve`` (:mod:`harness.cli.serve`)."""

from harness.cli.serve import main

if __name__ == "__main__":
    main()
