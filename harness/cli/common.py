"""What every command shares: where the configs are, composing them, and one line per user error.

Every command takes ``key=value`` settings (Hydra's override grammar). ``moi-grade``,
``moi-table`` and ``moi-paper`` also take their folders or file as plain arguments, and the
``--name value`` flags of earlier versions, which are read as ``name=value``.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from harness.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> str:
    """The Hydra config tree: ``harness/configs`` once installed, ``configs/`` in a checkout."""
    installed = PACKAGE / "configs"
    return str(installed if installed.is_dir() else PACKAGE.parent / "configs")


def fail(message: str) -> None:
    """Stop with one line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# Errors of the disk, not of the harness: said in one line with the path and what to do.
_DISK_ADVICE = {
    errno.ENOSPC: "free some space, then run the same command again (runs resume where they stopped)",
    errno.EDQUOT: "free some space, then run the same command again (runs resume where they stopped)",
    errno.EROFS: "choose a writable folder (e.g. results_dir=...)",
    errno.EACCES: "choose a folder you can write to (e.g. results_dir=...) or fix its permissions",
    errno.EPERM: "choose a folder you can write to (e.g. results_dir=...) or fix its permissions",
}


def disk_error(err: OSError) -> str | None:
    """One line for a full, read-only or forbidden path, or None for any other OSError."""
    if err.errno not in _DISK_ADVICE or (err.errno in (errno.EACCES, errno.EPERM) and not err.filename):
        return None
    where = f" {err.filename}" if err.filename else ""
    return f"cannot write{where}: {err.strerror or errno.errorcode[err.errno]}; {_DISK_ADVICE[err.errno]}"


def one_line_errors(main: Callable) -> Callable:
    """Run ``main``, turning a UserError, or a full, read-only or forbidden disk, into one line on
    stderr and exit code 2; Ctrl-C into one line and exit code 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            fail(str(err))
        except OSError as err:
            message = disk_error(err)
            if message is None:
                raise
            fail(message)
        except KeyboardInterrupt:  # Ctrl-C: what was written is kept, and the next run resumes from it
            print("interrupted; every completion written so far is kept: run the same command again to resume",
                  file=sys.stderr)
            sys.exit(130)

    return wrapper


def split_args(argv: list[str], flags: dict[str, str]) -> tuple[list[str], list[str]]:
    """Plain arguments and ``key=value`` settings. ``flags`` maps earlier versions' ``--flag`` names
    to keys: ``--flag value`` (or ``--flag=value``) becomes ``key=value``; ``--no-flag`` is
    ``key=false``. Anything else starting with ``-`` is refused."""
    plain, settings = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--no-") and arg[5:] in flags:
            settings.append(f"{flags[arg[5:]]}=false")
        elif arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if name not in flags:
                valid = ", ".join(f"--{f}" for f in flags) or "none"
                raise UserError(f"unknown option {arg}; use key=value settings (earlier options: {valid})")
            if not value:
                if not args:
                    raise UserError(f"option {arg} needs a value")
                value = args.pop(0)
            settings.append(f"{flags[name]}={value}")
        elif arg.startswith("-"):
            raise UserError(f"unknown option {arg}; use key=value settings")
        elif "=" in arg:
            settings.append(arg)
        else:
            plain.append(arg)
    return plain, settings


def runs_folder(command: str, plain: list[str], configured: str | None) -> Path:
    """The folder of runs a command reads: its one plain argument, else its ``runs_dir`` setting."""
    if len(plain) > 1:
        raise UserError(f"{command} takes one folder of runs, got {len(plain)}: {' '.join(plain)}")
    folder = plain[0] if plain else configured
    if not folder or not Path(folder).is_dir():
        raise UserError(f"runs_dir {folder or '(none given)'!r} is not a folder; give the folder of runs: {command} RUNS_DIR")
    return Path(folder)


def compose(config_name: str, overrides: list[str]) -> dict:
    """A command's config (``configs/NAME.yaml`` with the overrides), resolved to plain values."""
    from harness.cli.overrides import compose as checked_compose

    return checked_compose(config_name, overrides)


def wants_help(argv: list[str], doc: str) -> bool:
    """Print ``doc`` for ``-h``/``--help``."""
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip())
        return True
    return False
