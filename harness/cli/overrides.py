"""Command-line settings checked before Hydra runs, so that a misspelt name or key costs one line.

Hydra reports an unknown config name (``method=mixture``) or key (``method.bta=1``) in 7-16
lines and exits 1; the commands instead compose the config once per value of every sweep and
say what is wrong in one line, with the valid choices or the nearest key, and exit 2.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from pathlib import Path

from harness.errors import UserError

# Hydra's own flags; a command line with any other flag is left to Hydra as it is.
MULTIRUN = ("-m", "--multirun")


def _compose(config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from harness.cli.common import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _parse(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(f"cannot read the setting {text!r} ({first}); write key=value, e.g. method.beta=2") from None
    return parsed


def _cases(parsed: list) -> list[list[str]]:
    """Override lists that together try every value of every sweep (each sweep's first value,
    then one other value at a time), so a bad value anywhere in a sweep is found."""
    def single(override, value: str) -> str:
        return f"{override.get_key_element()}={value}"

    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [(o, list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override()]
    first = [single(o, values[0]) for o, values in sweeps if values]
    cases = [plain + first]
    for i, (o, values) in enumerate(sweeps):
        for value in values[1:]:
            cases.append(plain + first[:i] + [single(o, value)] + first[i + 1 :])
    return cases


def explain(err: Exception, config_name: str, overrides: list[str]) -> str:
    """One line for a Hydra composition error: the bad name with the valid choices, or the bad
    key with the nearest valid one."""
    from hydra.errors import MissingConfigException

    text = str(err).strip()
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", text)
        where = found.group(1) if found else "?"
        group, _, value = where.rpartition("/")
        options = ", ".join(err.options or []) or "none"
        if group:
            return f"unknown {group}={value}; valid choices: {options}"
        return f"config {where!r} not found"
    cause = err.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and "not in struct" in str(cause):
        return _unknown_key(full_key, config_name, overrides)
    return text.splitlines()[0]


def _unknown_key(full_key: str, config_name: str, overrides: list[str]) -> str:
    """``unknown key method.bta; did you mean method.beta? (keys of method: ...)``."""
    from omegaconf import DictConfig

    parent, _, name = full_key.rpartition(".")
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
    try:
        node = _compose(config_name, others)
        for part in parent.split(".") if parent else ():
            node = node[part]
        keys = sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
    except Exception:
        keys = []
    near = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    where = parent or "the config"
    hint = f"; did you mean {parent + '.' if parent else ''}{near[0]}?" if near else ""
    shown = ", ".join(keys[:16]) + (", ..." if len(keys) > 16 else "")
    return f"unknown key {full_key}{hint} (keys of {where}: {shown}; +{full_key}=... adds a new key)"


def compose(config_name: str, overrides: list[str]) -> dict:
    """The config ``configs/NAME.yaml`` with the overrides, resolved to plain values; a bad
    override is a one-line UserError."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _compose(config_name, overrides)
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(explain(err, config_name, overrides)) from None


def check(config_name: str, argv: list[str], validate=None) -> None:
    """Compose the config for every value of every sweep on this command line (and ``validate``
    it); raise a one-line UserError at the first bad one, before any job runs. With a sweep, also
    check that ``results_dir`` (where Hydra writes its multirun record) can be written. Command
    lines with other Hydra flags are left to Hydra."""
    if any(a.startswith("-") and a not in MULTIRUN for a in argv):
        return
    overrides = [a for a in argv if a not in MULTIRUN]
    cases = _cases(_parse(overrides))
    for case in cases:
        cfg = compose(config_name, case)
        if validate is not None:
            validate(cfg)
    if any(a in MULTIRUN for a in argv) and cfg.get("results_dir"):
        _check_writable(Path(str(cfg["results_dir"])))


def _check_writable(folder: Path) -> None:
    """Raise the OSError of a folder that cannot be created or written (a probe file is made and
    removed; nothing else changes)."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(handle)
    os.unlink(probe)


def checked_main(config_name: str, hydra_main, validate=None) -> None:
    """Run a ``@hydra.main`` function after checking the command line (one line and exit 2 on a
    bad setting, like the commands' other errors). ``-m`` may come anywhere (Hydra wants it first)."""
    from harness.cli.common import one_line_errors

    one_line_errors(check)(config_name, sys.argv[1:], validate)
    flags = [a for a in sys.argv[1:] if a in MULTIRUN]
    sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in MULTIRUN]
    hydra_main()
