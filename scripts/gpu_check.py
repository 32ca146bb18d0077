"""GPU checks of engine=vllm, run by ``scripts/gpu_check.sh`` (each step in its own process).

    python scripts/gpu_check.py equivalence --mode eager|graphs [--json FILE]
    python scripts/gpu_check.py summary DIR

``equivalence``: the tiny model in fp32 on CUDA, greedy, every method in one batch, squeezed so
that rows churn, prefills are chunked and requests are preempted (4 rows, 64-token steps, a KV
cache of 48 blocks of 16 tokens); it also runs on a CPU, to try it; vLLM must give the same tokens as the transformers engine.
``graphs`` runs vLLM compiled with CUDA graphs (the mixture is written into the persistent
``inputs_embeds`` buffer the graphs read), ``eager`` with ``enforce_eager``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.engines.base import Request  # noqa: E402
from harness.methods import example_specs  # noqa: E402

SPECS = example_specs()  # every method at each of its examples (harness.methods)
WORDS = "the answer number is create equation using basic arithmetic operations each only once show your work".split()
# The tiny model's KV cache: 1 KiB per token (2 layers x (k, v) x 64 x fp32). On CUDA, 48 blocks of
# 16 tokens; on CPUs (to try this script without a GPU), 5 blocks of 128.
KV_CACHE_BYTES = {"cuda": 48 * 16 * 1024, "cpu": 5 * 128 * 1024}


def requests() -> list[Request]:
    out = []
    for i in range(16):
        n_words = 150 if i == 0 else 5 + 9 * (i % 8)
        prompt = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n_words))
        spec = SPECS[i % len(SPECS)]
        out.append(Request(id=str(i), prompt=prompt, method=spec, temperature=0.6 if spec.method == "soft_thinking" else 0, seed=i,
                           max_tokens=96 + 8 * (i % 3)))
    return out


def equivalence(mode: str, json_path: str | None) -> int:
    import torch

    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm.engine import VLLMEngine
    from harness.models import tiny

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = tiny.ensure(REPO / ".cache" / "models" / "tiny")
    model_cfg = {"name": "tiny", "path": str(folder), "build": None, "dtype": "float32", "max_model_len": 512}
    reqs = requests()

    t0 = time.perf_counter()
    reference = TransformersEngine(model_cfg, {"batch_size": 32, "device": device})
    want = {r.id: c for r, c in reference.generate(reqs)}
    reference.close()
    ref_s = time.perf_counter() - t0

    engine_cfg = {
        "max_num_seqs": 4,
        "max_num_batched_tokens": 64,
        "enable_chunked_prefill": True,
        "kv_cache_memory_bytes": KV_CACHE_BYTES[device],
        "enforce_eager": mode == "eager",
    }
    if mode == "graphs":
        engine_cfg["extra"] = {"compilation_config": {"max_cudagraph_capture_size": 16}}
    t0 = time.perf_counter()
    engine = VLLMEngine(model_cfg, engine_cfg)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = {r.id: c for r, c in engine.generate(reqs)}
    gen_s = time.perf_counter() - t0
    info = engine.info()
    engine.close()

    rows = []
    for r in reqs:
        a, b = got[r.id].token_ids, want[r.id].token_ids
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"id": r.id, "spec": r.mix.to_extra_args(), "match": a == b, "first_diff": first,
                     "mixed_steps": [got[r.id].mixed_steps, want[r.id].mixed_steps]})
    matched = sum(row["match"] for row in rows)
    result = {
        "mode": mode,
        "device": info["device"],
        "matched": matched,
        "total": len(rows),
        "preemptions": info["num_preemptions"],
        "replayed_steps": info["moi"]["replayed_steps"],
        "mixed_steps": info["moi"]["mixed_steps"],
        "moi_extra_memory_bytes": info["moi_extra_memory_bytes"],
        "load_s": round(load_s, 1),
        "generate_s": round(gen_s, 1),
        "reference_s": round(ref_s, 1),
        "rows": rows,
    }
    print(f"equivalence {mode}: {matched}/{len(rows)} requests token-identical to transformers on {info['device']}; "
          f"preemptions {result['preemptions']}, replayed steps {result['replayed_steps']}, "
          f"mixed steps {result['mixed_steps']}; load {load_s:.0f} s, generate {gen_s:.1f} s")
    for row in rows:
        if not row["match"]:
            print(f"  request {row['id']} {row['spec']['moi_method']} beta={row['spec']['moi_beta']} "
                  f"support={row['spec']['moi_support']}: first difference at token {row['first_diff']}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    ok = matched == len(rows) and result["preemptions"] > 0 and result["replayed_steps"] > 0
    return 0 if ok else 1


def summary(folder: str) -> int:
    out = Path(folder)
    print()
    print("| check                         | result |")
    print("|-------------------------------|--------|")
    for mode in ("eager", "graphs"):
        path = out / f"eq_{mode}.json"
        if path.exists():
            r = json.loads(path.read_text())
            print(f"| equivalence, {mode:<16} | {r['matched']}/{r['total']} identical, {r['preemptions']} preemptions, "
                  f"{r['replayed_steps']} replayed |")
        else:
            print(f"| equivalence, {mode:<16} | missing (failed or timed out) |")
    path = out / "bench.json"
    if path.exists():
        b = json.loads(path.read_text())
        rates = {k: sorted(v)[len(v) // 2] for k, v in b["rates"].items()}
        base = rates["standard"]
        for name, rate in rates.items():
            print(f"| {name:<29} | {rate:,.0f} output tok/s ({(rate / base - 1) * 100:+.2f}% vs Standard) |")
        print(f"| MoI extra memory              | {b['info']['moi_extra_memory_bytes']:,} bytes |")
    else:
        print("| throughput                    | missing (failed or timed out) |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    eq = sub.add_parser("equivalence")
    eq.add_argument("--mode", choices=["eager", "graphs"], required=True)
    eq.add_argument("--json")
    sm = sub.add_parser("summary")
    sm.add_argument("folder")
    args = parser.parse_args(argv)
    if args.command == "equivalence":
        return equivalence(args.mode, args.json)
    return summary(args.folder)


if __name__ == "__main__":
    sys.exit(main())
