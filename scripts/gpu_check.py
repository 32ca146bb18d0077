"""GPU checks of engine=vllm, run by ``scripts/gpu_check.sh`` (each step in its own process).

    python scripts/gpu_check.py plan [--json FILE]
    python scripts/gpu_check.py equivalence --mode eager|graphs [--tp N] [--json FILE]
    python scripts/gpu_check.py summary DIR

``plan`` runs anywhere (no GPU, no model run): it drives vLLM's own scheduler with the check's
requests and the CUDA settings the check uses, and prints the KV cache (blocks, block size) and
the preemptions the scheduler makes (``preemptions: N``); the check is only meaningful when
that is at least 3 (replay after preemption is then exercised on the GPU).

``equivalence``: the tiny model in fp32, greedy, every method in one batch, squeezed so that rows
churn, prefills are chunked and requests are preempted (4 rows, 64-token steps, a KV cache of
36 blocks of 16 tokens on CUDA, 5 of 128 on CPUs, where it also runs, to try it); vLLM must give
the same tokens as the transformers engine. ``graphs`` runs vLLM compiled with CUDA graphs (the
mixture is written into the persistent ``inputs_embeds`` buffer the graphs read), ``eager`` with
``enforce_eager``. On CUDA it runs true fp32 (no TF32 anywhere: Triton's ``tl.dot`` in vLLM's
attention defaults to TF32 on Ampere and later unless ``TRITON_F32_DEFAULT=ieee``), on one GPU
unless ``--tp`` says otherwise, and with vLLM's sync check on: a host<->device synchronisation in
MoI's hooks fails the check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.engines.base import Request  # noqa: E402
from harness.methods import example_specs  # noqa: E402

SPECS = example_specs()  # every method at each of its examples (harness.methods)
WORDS = "the answer number is create equation using basic arithmetic operations each only once show your work".split()
# The tiny model's KV cache: 1 KiB per token (2 layers x (k, v) x 64 x fp32). CUDA: 36 blocks of 16
# tokens (vLLM's block size for its Triton attention in fp32; pinned anyway), which makes vLLM's
# scheduler preempt 4 times (tests/test_gpu_check.py); 33 is the least that holds max_model_len.
# CPUs (to try this script without a GPU): 5 blocks of 128 (9 preemptions).
KV_BLOCKS = {"cuda": (36, 16), "cpu": (5, 128)}
KV_BYTES_PER_TOKEN = 1024
MAX_MODEL_LEN = 512
MIN_PREEMPTIONS = 3
MIN_COMPARED = 12  # of the 16 requests, at least this many must be compared (not chaotic)
# No TF32 anywhere: Triton's default dot precision (part of its cache key), vLLM's setting for
# torch's fp32 matmuls, and cuBLAS / cuDNN's global switch.
TRUE_FP32 = {"TRITON_F32_DEFAULT": "ieee", "VLLM_FLOAT32_MATMUL_PRECISION": "highest", "NVIDIA_TF32_OVERRIDE": "0"}
# The files of MoI's hooks: a synchronisation whose innermost harness frame is in one of them is MoI's.
MOI_FILES = ("harness/engines/vllm/", "harness/methods/")
HOOKS = ("_sample", "_preprocess", "_update_states")


class CheckError(Exception):
    """A setting the check cannot run with (one line, exit status 2)."""


def requests() -> list[Request]:
    out = []
    for i in range(16):
        n_words = 150 if i == 0 else 5 + 9 * (i % 8)
        prompt = " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(n_words))
        spec = SPECS[i % len(SPECS)]
        out.append(Request(id=str(i), prompt=prompt, method=spec, temperature=0.6 if spec.method == "soft_thinking" else 0, seed=i,
                           max_tokens=96 + 8 * (i % 3)))
    return out


def tiny_model_cfg() -> dict:
    from harness.models import tiny

    folder = tiny.ensure(REPO / ".cache" / "models" / "tiny")
    # Its tokenizer has <think> and </think>: Soft Thinking's Cold Stop ends thinking (model facts).
    return {"name": "tiny", "path": str(folder), "build": None, "dtype": "float32", "max_model_len": MAX_MODEL_LEN,
            "prompting": {"thinking": {"start": "<think>", "end": "</think>", "opened": False}}}


def engine_cfg(device: str, mode: str, tp: int = 1) -> dict:
    """The squeezed engine of the check; the KV cache is exact (``num_gpu_blocks_override``)."""
    blocks, block_size = KV_BLOCKS[device]
    cfg = {
        "max_num_seqs": 4,
        "max_num_batched_tokens": 64,
        "enable_chunked_prefill": True,
        "kv_cache_memory_bytes": blocks * block_size * KV_BYTES_PER_TOKEN,
        "enforce_eager": mode == "eager",
        "tensor_parallel_size": tp,
        "extra": {"block_size": block_size, "num_gpu_blocks_override": blocks},
    }
    if mode == "graphs":
        cfg["extra"]["compilation_config"] = {"max_cudagraph_capture_size": 16}
    return cfg


def set_true_fp32() -> str:
    """Set (or verify) the settings under which CUDA runs true fp32; a line saying so for the log."""
    for name, value in TRUE_FP32.items():
        current = os.environ.get(name)
        if current is not None and current.lower() != value:
            raise CheckError(f"{name}={current} would let fp32 math run as TF32; unset it or set {name}={value}")
        os.environ[name] = value
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return ("numerics: true fp32 (TRITON_F32_DEFAULT=ieee for vLLM's Triton attention, "
            "float32 matmul precision highest, NVIDIA_TF32_OVERRIDE=0)")


# ------------------------------------------------------------------------------------------------
# plan: vLLM's scheduler on the check's requests, no model
# ------------------------------------------------------------------------------------------------


def plan(device: str = "cuda", blocks: int | None = None) -> dict:
    """The KV cache the check uses on ``device`` and what vLLM's scheduler does with its requests."""
    from transformers import AutoTokenizer

    from harness.engines.base import encode_prompt
    from harness.engines.vllm.engine import engine_args
    from harness.engines.vllm.schedule import KVPlan, simulate

    model_cfg = tiny_model_cfg()
    cfg = engine_cfg(device, "eager")
    num_blocks, block_size = KV_BLOCKS[device]
    kv = KVPlan(blocks or num_blocks, block_size)
    tokenizer = AutoTokenizer.from_pretrained(model_cfg["path"])
    reqs = requests()
    prompts = [encode_prompt(tokenizer, r)[1] for r in reqs]
    args = engine_args(model_cfg, cfg, model_cfg["path"])
    schedule = simulate(args, kv, prompts, [r.max_tokens for r in reqs])
    return {"device": device, "num_blocks": kv.num_blocks, "block_size": kv.block_size,
            "kv_tokens": kv.num_blocks * kv.block_size, "max_model_len": MAX_MODEL_LEN,
            "max_num_seqs": cfg["max_num_seqs"], "max_num_batched_tokens": cfg["max_num_batched_tokens"],
            "requests": len(reqs), "steps": schedule.steps, "preemptions": schedule.preemptions,
            "preempted_requests": schedule.preempted_requests, "chunked_prefill_steps": schedule.chunked_prefills}


def run_plan(json_path: str | None) -> int:
    result = plan("cuda")
    print(f"CUDA settings of the check: KV cache {result['num_blocks']} blocks x {result['block_size']} tokens "
          f"({result['kv_tokens']} tokens), max_model_len {result['max_model_len']}, "
          f"{result['max_num_seqs']} rows, {result['max_num_batched_tokens']}-token steps, chunked prefill")
    print(f"vLLM's scheduler on the check's {result['requests']} requests: {result['steps']} steps, "
          f"{result['chunked_prefill_steps']} with a split prefill, {result['preempted_requests']} requests preempted")
    print(f"preemptions: {result['preemptions']}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return 0 if result["preemptions"] >= MIN_PREEMPTIONS else 1


# ------------------------------------------------------------------------------------------------
# equivalence: vLLM against the transformers engine
# ------------------------------------------------------------------------------------------------


class SyncRecorder:
    """Counts the synchronisations vLLM's sync check (``VLLM_GPU_SYNC_CHECK=warn``) reports, split
    into those MoI's hooks make and vLLM's own (which are vLLM's business, not this check's)."""

    def __init__(self) -> None:
        self.moi: dict[str, int] = {}
        self.vllm = 0
        self._show = warnings.showwarning

    def install(self) -> None:
        # vLLM's hook forwards the warnings it does not raise to the showwarning it found: this one.
        warnings.showwarning = self._record

    def _record(self, message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if "synchroniz" not in text and "sync detected" not in text and "silently synchronous" not in text:
            return self._show(message, category, filename, lineno, file, line)
        frames = [(f.filename, f.name) for f in traceback.extract_stack()]
        where = moi_frame(frames)
        if where is None:
            self.vllm += 1
        else:
            self.moi[where] = self.moi.get(where, 0) + 1


def moi_frame(frames: list[tuple[str, str]]) -> str | None:
    """Where MoI's code caused a synchronisation (``file:function``), or None when it is vLLM's own.

    ``frames`` run outermost first. The innermost frame of MoI's files decides: one of the three
    hooks calling straight into vLLM is the hook's ``super()`` call (vLLM's own work); anything
    else (a helper, a method's rule, or a hook's own line) is MoI's.
    """
    for i in range(len(frames) - 1, -1, -1):
        filename, function = frames[i]
        path = filename.replace(os.sep, "/")
        if any(part in path for part in MOI_FILES):
            inner = frames[i + 1][0].replace(os.sep, "/") if i + 1 < len(frames) else ""
            if function in HOOKS and "/vllm/" in inner and not any(part in inner for part in MOI_FILES):
                return None
            return f"{path.rsplit('/', 1)[-1]}:{function}"
    return None


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (None if equal)."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def label(spec) -> str:
    """A method and the parameters where it differs from the method's defaults, e.g. ``moi(beta=4)``."""
    defaults = {p.name: p.default for p in spec.impl.params}
    changed = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.values if v != defaults[k])
    return f"{spec.method}({changed})"


def compare(request: Request, got: list[int], want: list[int], control: list[int]) -> dict:
    """vLLM's tokens against the reference's; ``chaotic`` when the reference's own control run
    (a rounding-level change) does not reproduce it either."""
    control_diff = first_difference(control, want)
    return {"id": request.id, "spec": label(request.method), "match": got == want, "first_diff": first_difference(got, want),
            "chaotic": control_diff is not None, "control_diff": control_diff}


def reference_outputs(model_cfg: dict, device: str, reqs: list[Request], batch_size: int) -> dict:
    from harness.engines.transformers_engine import TransformersEngine

    reference = TransformersEngine(model_cfg, {"batch_size": batch_size, "device": device})
    try:
        return {r.id: c for r, c in reference.generate(reqs)}
    finally:
        reference.close()


def equivalence(mode: str, tp: int, json_path: str | None) -> int:
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    notes = []
    recorder = SyncRecorder()
    if cuda:
        notes.append(set_true_fp32())
        os.environ["VLLM_GPU_SYNC_CHECK"] = "warn"  # read when vLLM is imported, below
        recorder.install()
        notes.append(f"GPUs: tensor_parallel_size={tp} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    for note in notes:
        print(note, flush=True)

    from harness.engines.vllm.engine import VLLMEngine

    model_cfg = tiny_model_cfg()
    reqs = requests()
    t0 = time.perf_counter()
    want = reference_outputs(model_cfg, device, reqs, batch_size=32)
    # The control: the same reference one request at a time (no padding), which changes only
    # the rounding of its sums. A request whose tokens change with that is numerically chaotic (a
    # soft feedback loop amplifying fp32 rounding) and cannot be compared token for token.
    control = reference_outputs(model_cfg, device, reqs, batch_size=1)
    ref_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    engine = VLLMEngine(model_cfg, engine_cfg(device, mode, tp))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = {r.id: c for r, c in engine.generate(reqs)}
    gen_s = time.perf_counter() - t0
    info = engine.info()
    engine.close()

    rows = [compare(r, got[r.id].token_ids, want[r.id].token_ids, control[r.id].token_ids) for r in reqs]
    for row, r in zip(rows, reqs):
        row["mixed_steps"] = [got[r.id].mixed_steps, want[r.id].mixed_steps]
    matched = sum(row["match"] for row in rows)
    chaotic = sum(row["chaotic"] and not row["match"] for row in rows)
    moi = info["moi"]
    result = {
        "mode": mode,
        "device": info["device"],
        "notes": notes,
        "matched": matched,
        "chaotic": chaotic,
        "total": len(rows),
        "preemptions": info["num_preemptions"],
        "replayed_steps": moi["replayed_steps"],
        "mixed_steps": moi["mixed_steps"],
        "moi_syncs": recorder.moi,
        "vllm_syncs": recorder.vllm,
        "host_waits": moi.get("host_waits", 0),
        "h2d_copies": moi.get("host_to_device_copies", 0),
        "moi_extra_memory_bytes": info["moi_extra_memory_bytes"],
        "moi_reserved_bytes": moi.get("reserved_bytes"),
        "load_s": round(load_s, 1),
        "generate_s": round(gen_s, 1),
        "reference_s": round(ref_s, 1),
        "rows": rows,
    }
    result["ok"] = bool(matched + chaotic == len(rows) and matched >= MIN_COMPARED and result["preemptions"] > 0
                        and result["replayed_steps"] > 0 and not recorder.moi and not result["host_waits"]
                        and moi.get("inputs_embeds_checked"))
    print(f"equivalence {mode}: {matched}/{len(rows)} requests token-identical to transformers on {info['device']}"
          f"{f' ({chaotic} numerically chaotic, not compared)' if chaotic else ''}; "
          f"preemptions {result['preemptions']}, replayed steps {result['replayed_steps']}, "
          f"mixed steps {result['mixed_steps']}; load {load_s:.0f} s, generate {gen_s:.1f} s")
    print(f"host syncs in MoI's hooks: {sum(recorder.moi.values())} {recorder.moi or ''} (vLLM's own: {recorder.vllm}); "
          f"host waits on staged copies: {result['host_waits']}; non-blocking uploads: {result['h2d_copies']}")
    for row in rows:
        if not row["match"]:
            print(f"  request {row['id']} {row['spec']}: first difference at token {row['first_diff']}"
                  + (f" (chaotic: the reference changes at token {row['control_diff']} one request at a time)"
                     if row["chaotic"] else ""))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


# ------------------------------------------------------------------------------------------------
# summary: one screen
# ------------------------------------------------------------------------------------------------


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def verdict(folder: Path) -> tuple[bool, list[str]]:
    """PASS or FAIL and the lines that say why (the files the steps wrote into ``folder``)."""
    lines, ok = [], True
    steps = {}
    if (folder / "steps.tsv").exists():
        for line in (folder / "steps.tsv").read_text().splitlines():
            name, rc, seconds, limit = line.split("\t")
            steps[name] = (int(rc), int(seconds), int(limit))

    def step_note(name: str) -> str:
        if name not in steps:
            return "not run"
        rc, seconds, limit = steps[name]
        if rc in (124, 137):
            return f"TIMED OUT after {seconds} s (limit {limit} s; a cold compile cache? run again)"
        return f"exit {rc}, {seconds} s"

    env = _load(folder, "env.json") or {}
    if env:
        lines.append(f"device    {env.get('gpu', '?')}; torch {env.get('torch', '?')}, vllm {env.get('vllm', '?')}; "
                     f"GPUs {env.get('devices', '?')}; compile caches {env.get('caches', '?')}")
    p = _load(folder, "plan.json")
    if p:
        good = p["preemptions"] >= MIN_PREEMPTIONS
        ok &= good
        lines.append(f"plan      KV {p['num_blocks']} x {p['block_size']}-token blocks: vLLM's scheduler preempts "
                     f"{p['preemptions']} times (needs >= {MIN_PREEMPTIONS}) {'ok' if good else 'FAIL'}")
    else:
        ok = False
        lines.append(f"plan      missing ({step_note('plan')})")
    for mode in ("eager", "graphs"):
        r = _load(folder, f"eq_{mode}.json")
        if r is None:
            ok = False
            lines.append(f"{mode:<9} missing ({step_note(mode)})")
            continue
        ok &= r["ok"]
        syncs = sum(r["moi_syncs"].values())
        chaotic = f" (+{r['chaotic']} chaotic)" if r.get("chaotic") else ""
        lines.append(f"{mode:<9} {r['matched']}/{r['total']} token-identical{chaotic}, {r['preemptions']} preemptions, "
                     f"{r['replayed_steps']} replayed, {syncs} syncs in MoI's hooks, {r['host_waits']} host waits "
                     f"{'ok' if r['ok'] else 'FAIL'} ({step_note(mode)})")
        for row in r["rows"]:
            if not row["match"]:
                why = f"chaotic, control differs at {row['control_diff']}" if row.get("chaotic") else "REAL DIFFERENCE"
                lines.append(f"            request {row['id']} {row['spec']}: token {row['first_diff']} ({why})")
    if notes := next((r["notes"] for m in ("eager", "graphs") if (r := _load(folder, f"eq_{m}.json"))), None):
        lines.extend(f"          {note}" for note in notes)
    b = _load(folder, "bench.json")
    if b:
        rates = {k: sorted(v)[len(v) // 2] for k, v in b["rates"].items()}
        base = rates["standard"]
        parts = [f"{name} {rate:,.0f} tok/s ({(rate / base - 1) * 100:+.1f}%)" for name, rate in rates.items()]
        lines.append("bench     " + "; ".join(parts))
        lines.append(f"          MoI extra memory {b['info']['moi_extra_memory_bytes']:,} bytes "
                     f"(reserved from the KV budget: {b['info']['moi'].get('reserved_bytes') or 0:,} bytes)")
    else:
        lines.append(f"bench     missing ({step_note('bench')}; not part of PASS)")
    if steps:
        total = sum(s[1] for s in steps.values())
        lines.append("time      " + ", ".join(f"{k} {v[1]} s" for k, v in steps.items()) + f"; total {total} s")
    return ok, lines


def summary(folder: str) -> int:
    ok, lines = verdict(Path(folder))
    print()
    print(f"GPU check: {'PASS' if ok else 'FAIL'}")
    for line in lines:
        print("  " + line)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan")
    pl.add_argument("--json")
    eq = sub.add_parser("equivalence")
    eq.add_argument("--mode", choices=["eager", "graphs"], required=True)
    eq.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1: one GPU)")
    eq.add_argument("--json")
    sm = sub.add_parser("summary")
    sm.add_argument("folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            return run_plan(args.json)
        if args.command == "equivalence":
            if args.tp < 1:
                raise CheckError(f"--tp must be an integer >= 1, got {args.tp}")
            return equivalence(args.mode, args.tp, args.json)
        return summary(args.folder)
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
