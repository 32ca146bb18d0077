"""MoI behind vLLM's OpenAI-compatible server (`harness.serve`), driven by `engine=openai` and by a
tool no one here wrote (lm-evaluation-harness's `local-completions` client)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
COUNTDOWN = "task.data.path=tasks/offline/countdown4_256.jsonl"
ENGINE = ["engine.enforce_eager=true", "engine.kv_cache_memory_bytes=134217728", "engine.max_num_seqs=16"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m harness.serve` in the background, stopped on exit."""

    def __init__(self, model_path: str, log: Path, env: dict | None = None, extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        args = [sys.executable, "-m", "harness.serve", f"model.path={model_path}", f"serve.port={self.port}", *ENGINE, *extra]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})}, start_new_session=True)

    def wait(self, timeout: float = 300) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise AssertionError(f"the server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    running = Server(tiny_model_path, tmp_path_factory.mktemp("server") / "server.log").wait()
    yield running
    running.stop()
    assert running.process.returncode is not None


def harness_run(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "harness.run", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def completions(root: Path, engine: str) -> dict:
    out = {}
    for path in sorted(root.rglob("samples.jsonl")):
        method = path.parent.name.split("_")[0]
        if f"_{engine}_" in path.parent.name:
            for line in path.read_text().splitlines():
                record = json.loads(line)
                out[(method, record["key"])] = record["completion"]
    return out


def test_a_sweep_through_the_server_equals_the_offline_engine(server, tiny_model_path, tmp_path):
    common = [f"model.path={tiny_model_path}", COUNTDOWN, f"results_dir={tmp_path}", "progress=false", "task.limit=3",
              "task.n_samples=2", "sampling.temperature=0", "sampling.max_tokens=16"]
    sweep = ["-m", "method=standard,moi", "method.beta=1"]
    # a parallel launcher against one server: two jobs at a time
    harness_run([*sweep, *common, "engine=openai", f"engine.url={server.url}", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2"])
    harness_run([*sweep, *common, "engine=vllm", *ENGINE])
    served, offline = completions(tmp_path, "openai"), completions(tmp_path, "vllm")
    assert len(served) == len(offline) == 12
    assert served == offline
    moi_differs = sum(served[("moi-b1", k)] != served[("standard", k)] for m, k in served if m == "standard")
    assert moi_differs >= 1
    # the server reports each request's counters (GET /v1/moi/requests): the same as offline
    summaries = {engine: json.loads(next(tmp_path.rglob(f"moi-b1_*_{engine}_*/summary.json")).read_text())
                 for engine in ("openai", "vllm")}
    assert summaries["openai"]["n"] == 6 and summaries["openai"]["mixed_steps"]["unknown"] == 0
    assert summaries["openai"]["mixed_steps"]["total"] == summaries["vllm"]["mixed_steps"]["total"] > 0


def test_the_readmes_requests_work_on_a_live_server(server, tiny_model_path, tmp_path):
    """The README's curl request, its OpenAI-client example and its engine=openai sweep (bounded), as
    they are written, against a live server (tests/test_readme.py leaves these to this test)."""
    import shlex

    from readme import blocks, commands

    readme_url = "http://127.0.0.1:8000/v1"
    [curl] = [c for c in commands() if c.startswith("curl ")]
    words = shlex.split(curl)
    reply = httpx.post(words[2].replace(readme_url, server.url), json=json.loads(words[words.index("-d") + 1]), timeout=300)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
    [client] = [b for b in blocks("python") if "OpenAI(" in b]
    ran = subprocess.run([sys.executable, "-c", client.replace(readme_url, server.url)], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    [sweep] = [c for c in commands() if c.startswith("moi-run -m engine=openai")]
    bound = {"engine.url": server.url, "model.path": tiny_model_path, "results_dir": str(tmp_path), "progress": "false",
             "task.limit": "2", "sampling.max_tokens": "4", "hydra.launcher.n_jobs": "2"}
    args = [w for w in shlex.split(sweep)[1:] if w.split("=", 1)[0] not in bound] + [f"{k}={v}" for k, v in bound.items()]
    harness_run(args)
    assert len(list(tmp_path.rglob("summary.json"))) == 4  # Standard once, MoI at three betas


@pytest.mark.parametrize(
    "xargs,fragment",
    [
        ({"moi_method": "mixture"}, "unknown method 'mixture'"),
        ({"moi_method": "moi", "moi_beta": -1}, "beta must be a finite number >= 0"),
        ({"moi_method": "moi", "moi_beta": "lots"}, "moi_beta must be a finite number >= 0, got 'lots'"),
        ({"moi_k": 0, "moi_method": "moi"}, "moi_k must be an integer >= 1, got 0"),
        ({"moi_method": "soft_thinking", "moi_max_topk": -2}, "moi_max_topk must be an integer >= 1, got -2"),
        ({"moi_support": "everything", "moi_method": "moi"}, "moi_support must be one of topk, full, got 'everything'"),
    ],
)
def test_bad_requests_get_a_400_and_the_server_goes_on(server, xargs, fragment):
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 4, "temperature": 0, "vllm_xargs": xargs}
    response = httpx.post(f"{server.url}/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert fragment in response.text
    ok = httpx.post(f"{server.url}/completions", json={**body, "vllm_xargs": {"moi_method": "moi", "moi_beta": 2}},
                    timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4


def test_n_is_capped_and_booleans_are_not_numbers(server):
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 2, "temperature": 0}
    too_many = httpx.post(f"{server.url}/completions", json={**body, "n": 1000}, timeout=60)
    assert too_many.status_code == 400 and "n=1000 is above this server's limit of 64" in too_many.text
    boolean = httpx.post(f"{server.url}/completions", json={**body, "vllm_xargs": {"moi_method": "moi", "moi_beta": True}},
                         timeout=60)
    assert boolean.status_code == 400 and "moi_beta must be a finite number >= 0, got True" in boolean.text
    assert httpx.post(f"{server.url}/completions", json={**body, "n": 2, "temperature": 0.6}, timeout=60).status_code == 200
    log = server.log.read_text()
    assert "MoI request" not in log  # no line per request by default


def test_soft_thinking_per_request_through_the_server(server, tiny_model_cfg):
    """Soft Thinking's parameters travel in vllm_xargs; the server takes the model's think-end token
    (the tiny model's </think>) and its tokens equal the offline transformers engine's."""
    from harness.engines.base import Request
    from harness.engines.transformers_engine import TransformersEngine
    from harness.methods import make_spec

    xargs = {"moi_method": "soft_thinking", "moi_entropy_threshold": 100.0, "moi_length_threshold": 3,
             "moi_after_thinking_temperature": 0.0, "moi_seed": 5}
    body = {"model": "tiny", "prompt": "the answer number is", "max_tokens": 8, "temperature": 0.6, "seed": 5,
            "return_token_ids": True, "vllm_xargs": xargs}
    reply = httpx.post(f"{server.url}/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    served = reply.json()["choices"][0]["token_ids"]
    spec = make_spec("soft_thinking", entropy_threshold=100.0, length_threshold=3, after_thinking_temperature=0.0)
    request = Request(id="st", prompt="the answer number is", method=spec, temperature=0.6, max_tokens=8, seed=5)
    [(_, offline)] = list(TransformersEngine(tiny_model_cfg, {}).generate([request]))
    assert served == offline.token_ids
    assert offline.token_ids[2] == 4  # Cold Stop emitted the tiny tokenizer's </think> (id 4) at the third step


LM_EVAL_TASK = """task: moi_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 16
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
"""
QUESTIONS = ["What is 12 + 30?", "Using the numbers [3, 5, 7, 11], create an equation that equals 24.",
             "Find the number of ways to choose 2 of 5 items.", "Answer: the value of x is"]


def test_lm_evaluation_harness_decodes_with_moi_through_the_server(tiny_model_path, tmp_path):
    """lm-eval's own `local-completions` client, unchanged, against a server whose process default
    is MoI (MIXINPUTS_BETA=1, as with the reference package): its greedy outputs equal our offline
    engine's MoI outputs, differ from Standard's, and the server logs every request's mixed steps."""
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "0"}) + "\n" for q in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "moi_local.yaml").write_text(LM_EVAL_TASK.format(data=data))
    server = Server(tiny_model_path, tmp_path / "server.log", env={"MIXINPUTS_BETA": "1"},
                    extra=["serve.log_requests=true"]).wait()
    try:
        model_args = (f"model=tiny,base_url={server.url}/completions,tokenizer={tiny_model_path},"
                      "tokenizer_backend=huggingface,num_concurrent=1,max_retries=2")
        result = subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
             "--tasks", "moi_local", "--include_path", str(tasks), "--output_path", str(tmp_path / "out"),
             "--log_samples"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        server.stop()
    [samples_file] = (tmp_path / "out").rglob("samples_moi_local_*.jsonl")
    records = [json.loads(line) for line in samples_file.read_text().splitlines()]
    lm_eval_out = {r["doc"]["question"]: r["resps"][0][0] for r in records}
    assert set(lm_eval_out) == set(QUESTIONS)

    from harness.engines.base import Request
    from harness.engines.vllm.engine import VLLMEngine
    from harness.methods import make_spec

    engine = VLLMEngine({"name": "tiny", "path": tiny_model_path, "dtype": "float32", "max_model_len": 4096},
                        {"enforce_eager": True, "kv_cache_memory_bytes": 134217728, "max_num_seqs": 16})
    try:
        requests = [Request(id=f"{m.method}|{q}", prompt=q, method=m, temperature=0.0, max_tokens=16,
                            stop=("\n\n", "<|im_end|>")) for q in QUESTIONS for m in (make_spec("moi", beta=1.0), make_spec())]
        offline = {r.id: c.text for r, c in engine.generate(requests)}
    finally:
        engine.close()
    # vLLM's incremental detokenizer (the server's) holds back a trailing incomplete UTF-8 character
    # that decoding the ids in one go (our engines) renders as U+FFFD: compare without it.
    def same(served: str, ours: str) -> bool:
        return served.rstrip("\ufffd") == ours.rstrip("\ufffd")

    for question in QUESTIONS:
        assert same(lm_eval_out[question], offline[f"moi|{question}"]), question
    assert sum(not same(lm_eval_out[q], offline[f"standard|{q}"]) for q in QUESTIONS) >= 1
    log = (tmp_path / "server.log").read_text()
    assert "default for requests without them: moi(beta=1.0," in log
    assert log.count("mixed_steps=") >= len(QUESTIONS)
