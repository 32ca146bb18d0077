"""``python -m harness.run``: the same command as ``moi-run`` (:mod:`harness.cli.run`)."""

from harness.cli.run import main

if __name__ == "__main__":
    main()
