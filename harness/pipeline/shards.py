"""Grid shards: a job's runs split into N disjoint parts, one engine each, balanced by tokens.

``shards=N shard=I`` runs the I-th part (``-m shard=0,1,...`` sweeps them, on SLURM or on one
node). The split is a pure function of the job's deduplicated runs and their token bounds
(requests x max_tokens, sizes counted as a dry run counts them, never from what is on disk), so
every shard job and the dry run compute the same parts, and a shard resumed after a requeue runs
the same runs: the runs, largest bound first (ties by directory), each go to the shard with the
smallest total so far (the lowest index on ties). Cells keep their run directories, so the union of
the shards is the unsharded grid, in the same directories.

On one node with more GPUs than an engine needs, ``gpus_per_shard=G`` gives shard I the G GPUs of
slot I mod (GPUs // G) (of ``CUDA_VISIBLE_DEVICES``, or of every GPU ``nvidia-smi`` lists), so
shards launched together (``hydra/launcher=submitit_local``) are data-parallel engines.

Dry runs also estimate GPU-hours from a throughput figure (``estimate``): the token bound divided
by the generated tokens/s of one engine, times the GPUs an engine uses. It is an upper bound under
an assumed throughput, not a measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.pipeline.config import validate
from harness.pipeline.identity import run_dir
from harness.pipeline.plan import token_bound


@dataclass(frozen=True)
class Shard:
    """One part of a job's runs."""

    index: int
    count: int
    runs: list[dict]
    requests: int
    tokens: int

    def describe(self) -> str:
        runs = f"{len(self.runs)} run{'' if len(self.runs) == 1 else 's'}"
        return f"shard {self.index}/{self.count}: {runs}, {self.requests} requests, at most {self.tokens} tokens"


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def settings(cfg: dict) -> tuple[int, int | None]:
    """``shards`` and ``shard`` of a job, checked (ConfigError names the bad value and the valid ones)."""
    shards, shard = cfg.get("shards", 1), cfg.get("shard")
    if not _positive_int(shards):
        raise ConfigError(f"shards must be a positive integer, got {shards!r}")
    valid = f"0..{shards - 1}"
    if shard is not None and (not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < shards):
        raise ConfigError(f"shard must be an integer in {valid} (shards={shards}), got {shard!r}")
    if shard is None and shards > 1 and not cfg.get("dry_run"):
        sweep = ",".join(str(i) for i in range(shards))
        raise ConfigError(f"shards={shards} needs shard=I, one of {valid}; run them all with -m shard={sweep}")
    per_shard = cfg.get("gpus_per_shard")
    if per_shard is not None and not _positive_int(per_shard):
        raise ConfigError(f"gpus_per_shard must be a positive integer or null, got {per_shard!r}")
    return shards, shard


def split(configs: list[dict], shards: int) -> list[Shard]:
    """The job's runs (configs naming the same run directory count once) in ``shards`` parts."""
    unique: dict[Path, dict] = {}
    for cfg in configs:
        validate(cfg)
        unique.setdefault(run_dir(cfg), cfg)
    bounds = {path: token_bound(cfg) for path, cfg in unique.items()}
    order = sorted(unique, key=lambda path: (-bounds[path][1], str(path)))
    loads = [0] * shards
    members: list[set[Path]] = [set() for _ in range(shards)]
    for path in order:
        target = min(range(shards), key=lambda index: (loads[index], index))
        members[target].add(path)
        loads[target] += bounds[path][1]
    parts = []
    for index, chosen in enumerate(members):
        paths = [path for path in unique if path in chosen]  # the grid's own order
        parts.append(Shard(index, shards, [unique[p] for p in paths], sum(bounds[p][0] for p in paths), loads[index]))
    return parts


def balance(parts: list[Shard]) -> float:
    """The largest shard's token bound over the mean (1.0 is perfect)."""
    mean = sum(p.tokens for p in parts) / len(parts)
    return max(p.tokens for p in parts) / mean if mean else 1.0


def throughput(cfg: dict) -> tuple[float, str]:
    """Generated tokens/s of one engine for the estimate, and where the figure comes from."""
    estimate = cfg.get("estimate") or {}
    value = estimate.get("throughput")
    if value is not None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"estimate.throughput must be a positive number of tokens/s, got {value!r}")
        return float(value), "estimate.throughput"
    table = estimate.get("throughputs") or {}
    gpu = estimate.get("gpu")
    if gpu not in table:
        raise ConfigError(
            f"estimate.gpu {gpu!r} has no default throughput; valid: {', '.join(table) or 'none'} "
            "(or set estimate.throughput=TOKENS_PER_S)"
        )
    return float(table[gpu]), f"the {gpu} default"


def gpus_per_engine(cfg: dict) -> int:
    """GPUs one engine uses, for the estimate: ``estimate.gpus_per_engine``, else the tensor-parallel size, else 1."""
    value = (cfg.get("estimate") or {}).get("gpus_per_engine")
    if value is not None:
        if not _positive_int(value):
            raise ConfigError(f"estimate.gpus_per_engine must be a positive integer or null, got {value!r}")
        return value
    for size in (cfg["engine"].get("tensor_parallel_size"), cfg["model"].get("tensor_parallel_size")):
        if _positive_int(size):
            return size
    return 1


def describe(job: dict, configs: list[dict], shards: int, shard: int | None) -> str:
    """The dry run's estimate and shards: GPU-hours of the job and of each shard (or of ``shard``)."""
    rate, source = throughput(job)
    gpus = gpus_per_engine(job)

    def hours(tokens: int) -> str:
        engine_hours = tokens / rate / 3600
        return f"at most {engine_hours * gpus:.1f} GPU-hours ({engine_hours:.1f} h of one engine)"

    parts = split(configs, shards)
    total = sum(p.tokens for p in parts)
    lines = [
        f"  estimate (not a measurement): {hours(total)} at {rate:g} generated tokens/s per engine ({source}), "
        f"{gpus} GPU{'s' if gpus > 1 else ''} per engine; set estimate.throughput to your measured figure"
    ]
    if shards > 1:
        empty = sum(1 for p in parts if not p.runs)
        note = f"; {empty} empty (fewer runs than shards)" if empty else ""
        lines.append(
            f"  {shards} shards balanced by token bound: largest {max(p.tokens for p in parts)} tokens = "
            f"{balance(parts):.3f} x the mean {total / shards:.0f}{note}"
        )
        lines += [f"  {p.describe()}; {hours(p.tokens)}" for p in parts if shard is None or p.index == shard]
    return "\n".join(lines)


def visible_gpus(environ: dict) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``, else every GPU ``nvidia-smi -L`` lists."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [d.strip() for d in value.split(",") if d.strip()]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, _ in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def shard_gpus(visible: list[str], per_shard: int, shard: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of a shard on one node: the GPUs of slot shard mod (GPUs // per_shard)."""
    slots = len(visible) // per_shard
    if slots < 1:
        shown = ",".join(visible) or "none"
        raise ConfigError(f"gpus_per_shard={per_shard} needs {per_shard} GPUs; this process sees {len(visible)} ({shown})")
    slot = shard % slots
    return ",".join(visible[slot * per_shard : (slot + 1) * per_shard])


_node_gpus: list[str] = []  # the GPUs this process saw before a shard narrowed them


def use_shard_gpus(per_shard: int, shard: int) -> str:
    """Point ``CUDA_VISIBLE_DEVICES`` at a shard's GPUs before any engine starts; return them."""
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        raise ConfigError("gpus_per_shard needs a fresh process per shard (CUDA is initialised here already): "
                          "launch the shards with hydra/launcher=submitit_local")
    if not _node_gpus:
        _node_gpus.extend(visible_gpus(dict(os.environ)))
    os.environ["CUDA_VISIBLE_DEVICES"] = shard_gpus(_node_gpus, per_shard, shard)
    return os.environ["CUDA_VISIBLE_DEVICES"]
