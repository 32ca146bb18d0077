"""The GPU check (``scripts/gpu_check.py``, ``scripts/gpu_check.sh``), without a GPU.

Its CUDA KV budget is chosen by driving vLLM's own scheduler with the check's requests
(``harness.engines.vllm.schedule``), which is shown here to predict a real engine's preemptions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_check()


# ------------------------------------------------------------------------------------------------
# plan: preemptions with the CUDA settings
# ------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_plan_command_reports_at_least_three_preemptions_for_the_cuda_settings(tmp_path):
    out = tmp_path / "plan.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "plan", "--json", str(out)], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.findall(r"^preemptions: (\d+)$", run.stdout, flags=re.M)
    assert len(found) == 1, run.stdout
    plan = json.loads(out.read_text())
    assert int(found[0]) == plan["preemptions"] >= gpu_check.MIN_PREEMPTIONS
    assert (plan["num_blocks"], plan["block_size"]) == gpu_check.KV_BLOCKS["cuda"] == (36, 16)
    # vLLM refuses a KV cache that cannot hold one max_model_len request (plus its null block).
    assert plan["num_blocks"] - 1 >= plan["max_model_len"] / plan["block_size"]
    assert f"KV cache {plan['num_blocks']} blocks x {plan['block_size']} tokens" in run.stdout


@pytest.mark.vllm
def test_the_old_cuda_budget_would_not_preempt_at_all():
    """48 blocks of 16 (the check's former CUDA setting) never fill up: replay would go untested."""
    assert gpu_check.plan("cuda", blocks=48)["preemptions"] == 0
    assert gpu_check.plan("cuda", blocks=40)["preemptions"] == 3


@pytest.mark.vllm
def test_scheduler_simulation_predicts_a_real_engines_preemptions(tiny_model_cfg):
    """The simulation makes exactly the preemptions a real engine with the same settings makes
    (its requests stopping where the real ones stopped)."""
    from harness.engines.base import Request, encode_prompt
    from harness.engines.vllm.engine import VLLMEngine
    from harness.engines.vllm.schedule import KVPlan, simulate
    from harness.methods import make_spec

    specs = [make_spec(), make_spec("moi", beta=1.0), make_spec("direct_mixture")]
    requests = [Request(id=str(i), prompt=" ".join(gpu_check.WORDS[(3 * i + j) % len(gpu_check.WORDS)] for j in range(4 + 7 * i)),
                        method=specs[i % 3], temperature=0, max_tokens=40 + 4 * (i % 3)) for i in range(9)]
    model_cfg = {**tiny_model_cfg, "max_model_len": 256}
    engine_cfg = {"enforce_eager": True, "max_num_seqs": 4, "max_num_batched_tokens": 64, "enable_chunked_prefill": True,
                  "kv_cache_memory_bytes": 10 * 32 * 1024, "extra": {"block_size": 32, "num_gpu_blocks_override": 10}}
    engine = VLLMEngine(model_cfg, engine_cfg)
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
        preemptions = engine.num_preemptions()
        args = dict(engine.args)
        prompts = [encode_prompt(engine.tokenizer, r)[1] for r in requests]
    finally:
        engine.close()
    schedule = simulate(args, KVPlan(10, 32), prompts, [len(got[r.id].token_ids) for r in requests])
    assert preemptions >= 2
    assert schedule.preemptions == preemptions


# ------------------------------------------------------------------------------------------------
# equivalence: what it compares, and its environment
# ------------------------------------------------------------------------------------------------


def test_true_fp32_settings_are_set_and_a_tf32_setting_is_refused(monkeypatch):
    for name in gpu_check.TRUE_FP32:
        monkeypatch.delenv(name, raising=False)
    note = gpu_check.set_true_fp32()
    assert os.environ["TRITON_F32_DEFAULT"] == "ieee" and "true fp32" in note and "TRITON_F32_DEFAULT=ieee" in note
    assert os.environ["VLLM_FLOAT32_MATMUL_PRECISION"] == "highest"
    monkeypatch.setenv("TRITON_F32_DEFAULT", "tf32")
    with pytest.raises(gpu_check.CheckError, match="TRITON_F32_DEFAULT=tf32"):
        gpu_check.set_true_fp32()


def test_the_check_pins_one_gpu_and_builds_a_tp1_engine():
    cfg = gpu_check.engine_cfg("cuda", "graphs")
    assert cfg["tensor_parallel_size"] == 1
    assert cfg["extra"]["num_gpu_blocks_override"] == 36 and cfg["extra"]["block_size"] == 16
    assert cfg["kv_cache_memory_bytes"] == 36 * 16 * gpu_check.KV_BYTES_PER_TOKEN
    assert gpu_check.main(["equivalence", "--mode", "eager", "--tp", "0"]) == 2


def test_a_request_is_chaotic_only_when_the_reference_does_not_reproduce_itself():
    request = gpu_check.requests()[0]
    same = gpu_check.compare(request, [1, 2, 3], [1, 2, 3], [1, 2, 3])
    assert same["match"] and not same["chaotic"]
    real = gpu_check.compare(request, [1, 9, 3], [1, 2, 3], [1, 2, 3])
    assert not real["match"] and not real["chaotic"] and real["first_diff"] == 1
    chaotic = gpu_check.compare(request, [1, 9, 3], [1, 2, 3], [1, 2, 7])
    assert chaotic["chaotic"] and chaotic["control_diff"] == 2


def test_syncs_are_attributed_to_moi_unless_they_happen_inside_vllms_own_code():
    runner, vllm = "/x/harness/engines/vllm/runner.py", "/x/site-packages/vllm/v1/worker/gpu_model_runner.py"
    torch_file = "/x/site-packages/torch/_tensor.py"
    assert gpu_check.moi_frame([("/x/vllm/core.py", "step"), (runner, "_sample"), (vllm, "_sample")]) is None
    assert gpu_check.moi_frame([(runner, "_sample"), (runner, "_moi_prepare"), (torch_file, "item")]) == "runner.py:_moi_prepare"
    assert gpu_check.moi_frame([(runner, "_sample"), (torch_file, "item")]) == "runner.py:_sample"
    # the model's embedding, called from MoI's own helper, is MoI's doing
    assert gpu_check.moi_frame([(runner, "_moi_embed"), (vllm, "embed_input_ids")]) == "runner.py:_moi_embed"
    assert gpu_check.moi_frame([("/x/harness/methods/moi.py", "prepare")]) == "moi.py:prepare"
    assert gpu_check.moi_frame([(vllm, "_sample")]) is None


# ------------------------------------------------------------------------------------------------
# the shell script and its verdict
# ------------------------------------------------------------------------------------------------


def test_the_whole_check_fits_ten_minutes_with_its_own_timeouts():
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    limits = [int(m) for m in re.findall(r"^step \S+ (\d+) ", text, flags=re.M)]
    grace = int(re.search(r"timeout -k (\d+)", text).group(1))
    assert len(limits) == 4
    # the steps with their kill grace, plus 30 s for the environment check (imports vLLM) and the verdict
    assert sum(limits) + grace * len(limits) + 30 <= 600
    assert "export TRITON_F32_DEFAULT=ieee" in text and 'export CUDA_VISIBLE_DEVICES="$DEVICES"' in text


def test_the_script_stops_cleanly_without_cuda(tmp_path):
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no CUDA device" in run.stdout


def _write(folder: Path, name: str, data) -> None:
    (folder / name).write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_verdict_fits_one_screen_and_names_what_failed(tmp_path):
    rows = [{"id": str(i), "spec": "moi(beta=1)", "match": True, "first_diff": None, "chaotic": False, "control_diff": None}
            for i in range(16)]
    rows[8] = {**rows[8], "match": False, "first_diff": 35, "chaotic": True, "control_diff": 46}
    eq = {"ok": True, "matched": 15, "chaotic": 1, "total": 16, "preemptions": 4, "replayed_steps": 90,
          "moi_syncs": {}, "host_waits": 0, "notes": ["numerics: true fp32"], "rows": rows}
    _write(tmp_path, "plan.json", {"num_blocks": 36, "block_size": 16, "preemptions": 4})
    _write(tmp_path, "eq_eager.json", eq)
    _write(tmp_path, "eq_graphs.json", eq)
    _write(tmp_path, "steps.tsv", "plan\t0\t9\t40\neager\t0\t61\t140\ngraphs\t0\t80\t170\nbench\t124\t181\t180\n")
    ok, lines = gpu_check.verdict(tmp_path)
    assert ok and len(lines) <= 20
    text = "\n".join(lines)
    assert "preempts 4 times" in text and "15/16 token-identical (+1 chaotic)" in text
    assert "TIMED OUT after 181 s" in text and "not part of PASS" in text

    bad = {**eq, "ok": False, "matched": 14, "rows": [*rows[:3], {**rows[3], "match": False, "first_diff": 7}, *rows[4:]]}
    _write(tmp_path, "eq_graphs.json", bad)
    _write(tmp_path, "plan.json", {"num_blocks": 48, "block_size": 16, "preemptions": 0})
    ok, lines = gpu_check.verdict(tmp_path)
    text = "\n".join(lines)
    assert not ok and "REAL DIFFERENCE" in text and "preempts 0 times (needs >= 3) FAIL" in text
    (tmp_path / "eq_eager.json").unlink()
    ok, lines = gpu_check.verdict(tmp_path)
    assert not ok and any(line.startswith("eager") and "missing" in line for line in lines)
