"""Every private vLLM name the MoI path relies on, checked in vLLM's source (read, not imported).

MoI subclasses vLLM's V1 model runner and workers and reads their attributes; an upgrade that
renames one would fail at best in the middle of a step, at worst decode unmixed. This reads the
installed vLLM's source (``MOI_VLLM_SOURCE=DIR`` reads another one, e.g. an unpacked wheel of a
newer release, without installing it) and lists everything that moved: classes, methods and their
parameters, attributes, dataclass fields, environment variables, and the two facts the runner's
correctness rests on (``_preprocess`` hands the model a slice of the persistent ``inputs_embeds``
buffer; every step that ran on the device ends by waiting for its sampled tokens).

The ``self.<name>`` attributes the runner mixin reads are found in ``runner.py`` itself, so a new
one is checked without editing this list.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "harness" / "engines" / "vllm" / "runner.py"

MR = "v1/worker/gpu_model_runner.py"
# (file, class, method, the parameters MoI passes (after self), in order; None: others may follow)
METHODS = [
    (MR, "GPUModelRunner", "_update_states", ["scheduler_output"]),
    (MR, "GPUModelRunner", "_sample", ["logits", "spec_decode_metadata"]),
    (MR, "GPUModelRunner", "_preprocess", ["scheduler_output", "num_input_tokens", "intermediate_tensors"]),
    (MR, "GPUModelRunner", "_make_buffer", None),
    (MR, "GPUModelRunner", "_to_list", ["sampled_token_ids"]),
    (MR, "GPUModelRunner", "_bookkeeping_sync", None),
    ("v1/worker/gpu_worker.py", "Worker", "_make_model_runner", []),
    ("v1/worker/gpu_worker.py", "Worker", "determine_available_memory", []),
    ("v1/worker/cpu_worker.py", "CPUWorker", "init_device", []),
    ("v1/worker/cpu_worker.py", "CPUWorker", "determine_available_memory", []),
    ("v1/worker/gpu_input_batch.py", "InputBatch", "req_ids", []),
    ("v1/worker/gpu_input_batch.py", "InputBatch", "num_reqs", []),
    ("model_executor/models/interfaces_base.py", "VllmModel", "embed_input_ids", ["input_ids"]),
    ("model_executor/models/qwen2.py", "Qwen2ForCausalLM", "embed_input_ids", ["input_ids"]),
    ("v1/sample/logits_processor/interface.py", "LogitsProcessor", "validate_params", ["sampling_params"]),
    ("v1/core/sched/scheduler.py", "Scheduler", "__init__", ["vllm_config", "kv_cache_config", "structured_output_manager",
                                                              "block_size", None]),
    ("v1/core/sched/scheduler.py", "Scheduler", "schedule", []),
    ("v1/core/sched/scheduler.py", "Scheduler", "update_from_output", ["scheduler_output", "model_runner_output"]),
    ("v1/core/sched/scheduler.py", "Scheduler", "add_request", ["request"]),
    ("v1/core/sched/scheduler.py", "Scheduler", "has_requests", []),
    ("entrypoints/llm.py", "LLM", "collective_rpc", None),
    ("entrypoints/llm.py", "LLM", "get_metrics", None),
]
# (file, class, attribute): set as ``self.<attribute>`` in the class, or a dataclass field or property
ATTRIBUTES = [
    ("v1/worker/gpu_input_batch.py", "InputBatch", "num_computed_tokens_cpu"),
    ("v1/worker/gpu_input_batch.py", "CachedRequestState", "sampling_params"),
    ("v1/worker/gpu_input_batch.py", "CachedRequestState", "num_prompt_tokens"),
    ("v1/utils.py", "CpuGpuBuffer", "np"),
    ("v1/utils.py", "CpuGpuBuffer", "gpu"),
    ("v1/core/sched/output.py", "SchedulerOutput", "finished_req_ids"),
    ("v1/core/sched/output.py", "SchedulerOutput", "total_num_scheduled_tokens"),
    ("v1/core/sched/output.py", "SchedulerOutput", "scheduled_new_reqs"),
    ("v1/core/sched/output.py", "SchedulerOutput", "scheduled_cached_reqs"),
    ("v1/core/sched/output.py", "SchedulerOutput", "num_scheduled_tokens"),
    ("v1/core/sched/output.py", "NewRequestData", "req_id"),
    ("v1/core/sched/output.py", "CachedRequestData", "resumed_req_ids"),
    ("v1/outputs.py", "SamplerOutput", "sampled_token_ids"),
    ("v1/outputs.py", "ModelRunnerOutput", "req_ids"),
    ("v1/outputs.py", "ModelRunnerOutput", "req_id_to_index"),
    ("v1/outputs.py", "ModelRunnerOutput", "sampled_token_ids"),
    ("v1/request.py", "Request", "num_preemptions"),
    ("v1/request.py", "Request", "num_computed_tokens"),
    ("v1/kv_cache_interface.py", "KVCacheConfig", "num_blocks"),
    ("v1/kv_cache_interface.py", "KVCacheConfig", "kv_cache_tensors"),
    ("v1/kv_cache_interface.py", "KVCacheConfig", "kv_cache_groups"),
    ("model_executor/layers/vocab_parallel_embedding.py", "VocabParallelEmbedding", "shard_indices"),
    ("model_executor/layers/vocab_parallel_embedding.py", "VocabParallelEmbeddingShardIndices", "org_vocab_start_index"),
    ("model_executor/layers/vocab_parallel_embedding.py", "VocabParallelEmbeddingShardIndices", "org_vocab_end_index"),
    ("config/cache.py", "CacheConfig", "enable_prefix_caching"),
    ("config/cache.py", "CacheConfig", "kv_cache_memory_bytes"),
    ("config/cache.py", "CacheConfig", "num_gpu_blocks_override"),
    ("config/cache.py", "CacheConfig", "num_gpu_blocks"),
    ("config/cache.py", "CacheConfig", "block_size"),
    ("config/scheduler.py", "SchedulerConfig", "async_scheduling"),
    ("config/scheduler.py", "SchedulerConfig", "max_num_seqs"),
    ("config/scheduler.py", "SchedulerConfig", "max_num_batched_tokens"),
    ("config/parallel.py", "ParallelConfig", "pipeline_parallel_size"),
    ("config/parallel.py", "ParallelConfig", "tensor_parallel_size"),
    ("config/parallel.py", "ParallelConfig", "decode_context_parallel_size"),
    ("config/parallel.py", "ParallelConfig", "prefill_context_parallel_size"),
    ("config/vllm.py", "VllmConfig", "additional_config"),
    ("config/vllm.py", "VllmConfig", "speculative_config"),
    ("config/vllm.py", "VllmConfig", "kv_transfer_config"),
    ("config/vllm.py", "VllmConfig", "use_v2_model_runner"),
    ("config/model.py", "ModelConfig", "enable_prompt_embeds"),
    ("config/model.py", "ModelConfig", "is_encoder_decoder"),
    ("config/model.py", "ModelConfig", "runner_type"),
    ("config/model.py", "ModelConfig", "get_vocab_size"),
    ("config/model.py", "ModelConfig", "get_hidden_size"),
]
# (file, class, base class): the subclass relations MoI's subclasses rely on
BASES = [
    ("v1/worker/cpu_model_runner.py", "CPUModelRunner", "GPUModelRunner"),
    ("v1/worker/cpu_worker.py", "CPUWorker", "Worker"),
    ("model_executor/layers/vocab_parallel_embedding.py", "ParallelLMHead", "VocabParallelEmbedding"),
]
# (file, top-level function)
FUNCTIONS = [
    ("distributed/parallel_state.py", "get_tensor_model_parallel_world_size"),
    ("distributed/parallel_state.py", "cleanup_dist_env_and_memory"),
    ("distributed/communication_op.py", "tensor_model_parallel_all_reduce"),
]
# (file, string that must occur): environment variables and metric names
STRINGS = [
    ("envs.py", '"VLLM_USE_V2_MODEL_RUNNER"'),
    ("envs.py", '"VLLM_GPU_SYNC_CHECK"'),
    ("envs.py", '"VLLM_FLOAT32_MATMUL_PRECISION"'),
    ("v1/metrics/loggers.py", '"vllm:num_preemptions"'),
]


@dataclass
class ClassInfo:
    methods: dict[str, list[str]] = field(default_factory=dict)  # name -> parameters after self
    required: dict[str, set[str]] = field(default_factory=dict)  # name -> its parameters without a default
    attributes: set[str] = field(default_factory=set)
    bases: list[str] = field(default_factory=list)
    node: ast.ClassDef | None = None


def parse_classes(path: Path) -> dict[str, ClassInfo]:
    """Classes of a file: their methods (with parameter names), ``self.x`` attributes set anywhere
    in them, class-level fields and properties, and their base class names."""
    tree = ast.parse(path.read_text())
    classes = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        info = ClassInfo(bases=[ast.unparse(b).split(".")[-1].split("[")[0] for b in node.bases], node=node)
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                args = item.args
                positional = [*args.posonlyargs, *args.args]
                names = [a.arg for a in [*positional, *args.kwonlyargs]]
                required = {a.arg for a in positional[: len(positional) - len(args.defaults)]}
                required |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None}
                info.methods[item.name] = names[1:] if names and names[0] in ("self", "cls") else names
                info.required[item.name] = required - {"self", "cls"}
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                info.attributes.add(item.target.id)
            elif isinstance(item, ast.Assign):
                info.attributes |= {t.id for t in item.targets if isinstance(t, ast.Name)}
        for sub in ast.walk(node):
            targets = []
            if isinstance(sub, ast.Assign):
                targets = sub.targets
            elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
                targets = [sub.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        info.attributes.add(t.attr)
        classes[node.name] = info
    return classes


def runner_attributes() -> set[str]:
    """The ``self.<name>`` attributes MoI's runner mixin reads that it does not define itself."""
    tree = ast.parse(RUNNER.read_text())
    mixin = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MoIRunnerMixin")
    own = {n.name for n in mixin.body if isinstance(n, ast.FunctionDef)}
    own |= {n.target.id for n in mixin.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    used = set()
    for node in ast.walk(mixin):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            used.add(node.attr)
    return {name for name in used - own if not name.startswith("_moi")}


def _method_body(classes: dict[str, ClassInfo], cls: str, name: str) -> ast.FunctionDef | None:
    info = classes.get(cls)
    if info is None:
        return None
    return next((n for n in info.node.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def check_vllm_source(root: Path) -> list[str]:
    """Everything MoI relies on that ``root`` (a ``vllm`` package folder) no longer has, one line each."""
    cache: dict[str, dict[str, ClassInfo]] = {}
    problems = []

    def classes(rel: str) -> dict[str, ClassInfo] | None:
        if rel not in cache:
            path = root / rel
            cache[rel] = parse_classes(path) if path.is_file() else None
        return cache[rel]

    def lookup(rel: str, cls: str) -> ClassInfo | None:
        found = classes(rel)
        if found is None:
            problems.append(f"{rel}: file missing")
            cache[rel] = {}
            return None
        if cls not in found:
            problems.append(f"{rel}: class {cls} missing")
            return None
        return found[cls]

    for rel, cls, method, params in METHODS:
        info = lookup(rel, cls)
        if info is None:
            continue
        if method not in info.methods:
            problems.append(f"{cls}.{method} missing ({rel})")
        elif params is not None:
            got = info.methods[method]
            want = [p for p in params if p is not None]
            # MoI's calls pass these, in this order; any further parameter must have a default
            extra_required = (info.required[method] - set(want)) if None not in params else set()
            if got[: len(want)] != want or extra_required:
                problems.append(f"{cls}.{method} parameters changed: ({', '.join(want)}) -> ({', '.join(got)}) ({rel})")
    for rel, cls, attribute in ATTRIBUTES:
        info = lookup(rel, cls)
        if info is not None and attribute not in info.attributes and attribute not in info.methods:
            problems.append(f"{cls}.{attribute} missing ({rel})")
    runner = lookup(MR, "GPUModelRunner")
    if runner is not None:
        for attribute in sorted(runner_attributes()):
            if attribute not in runner.attributes and attribute not in runner.methods:
                problems.append(f"GPUModelRunner.{attribute} missing (read by harness/engines/vllm/runner.py; {MR})")
    for rel, cls, base in BASES:
        info = lookup(rel, cls)
        if info is not None and base not in info.bases:
            problems.append(f"{cls} no longer subclasses {base} ({rel}: bases {', '.join(info.bases)})")
    for rel, name in FUNCTIONS:
        path = root / rel
        if not path.is_file() or not re.search(rf"^def {name}\(", path.read_text(), flags=re.M):
            problems.append(f"function {name} missing ({rel})")
    for rel, text in STRINGS:
        path = root / rel
        if not path.is_file() or text not in path.read_text():
            problems.append(f"{text} missing ({rel})")
    if runner is not None:
        problems += _runner_facts(classes(MR))
    return problems


def _runner_facts(classes: dict[str, ClassInfo]) -> list[str]:
    """The two facts MoI's correctness rests on, read from the runner's code."""
    problems = []
    preprocess = _method_body(classes, "GPUModelRunner", "_preprocess")
    if preprocess is not None:
        returns = [n for n in ast.walk(preprocess) if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)]
        if not returns or any(ast.unparse(r.value.elts[1]) != "inputs_embeds" for r in returns if len(r.value.elts) > 1):
            problems.append("GPUModelRunner._preprocess no longer returns inputs_embeds second")
        slices = [n for n in ast.walk(preprocess) if isinstance(n, ast.Assign) and len(n.targets) == 1
                  and ast.unparse(n.targets[0]) == "inputs_embeds" and ast.unparse(n.value) == "self.inputs_embeds.gpu[:num_input_tokens]"]
        if not slices:
            problems.append("GPUModelRunner._preprocess no longer hands out a slice of the persistent inputs_embeds buffer")
    bookkeeping = _method_body(classes, "GPUModelRunner", "_bookkeeping_sync")
    to_list = _method_body(classes, "GPUModelRunner", "_to_list")
    if bookkeeping is not None and to_list is not None and (
            "self._to_list(" not in ast.unparse(bookkeeping) or ".synchronize()" not in ast.unparse(to_list)):
        problems.append("GPUModelRunner no longer waits for the sampled tokens at the end of a step "
                            "(_bookkeeping_sync -> _to_list -> synchronize): state.Uploader reuses its staging memory on that")
    return problems


def installed_vllm() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    return Path(spec.origin).parent


@pytest.mark.vllm
def test_every_name_moi_relies_on_is_in_the_installed_vllm():
    problems = check_vllm_source(installed_vllm())
    assert problems == [], "\n".join(problems)


@pytest.mark.skipif(not os.environ.get("MOI_VLLM_SOURCE"), reason="MOI_VLLM_SOURCE=DIR: another vLLM's source folder")
def test_every_name_moi_relies_on_is_in_another_vllm():
    problems = check_vllm_source(Path(os.environ["MOI_VLLM_SOURCE"]))
    assert problems == [], "\n".join(problems)


@pytest.mark.vllm
def test_the_check_lists_what_moved(tmp_path):
    """A vLLM with a renamed runner attribute, a changed signature and a copied embeddings buffer."""
    root = tmp_path / "vllm"
    source = installed_vllm()
    files = {rel for rel, *_ in METHODS + ATTRIBUTES + BASES + FUNCTIONS + STRINGS}
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, root / rel)
    assert check_vllm_source(root) == []
    runner = root / MR
    text = runner.read_text()
    text = text.replace("self.discard_request_mask", "self.discard_mask")
    text = text.replace("def _sample(\n        self,\n        logits:", "def _sample(\n        self,\n        raw_logits:")
    text = text.replace("inputs_embeds = self.inputs_embeds.gpu[:num_input_tokens]",
                        "inputs_embeds = self.inputs_embeds.gpu[:num_input_tokens].clone()")
    runner.write_text(text)
    (root / "v1/utils.py").write_text((root / "v1/utils.py").read_text().replace("self.np", "self.numpy"))
    problems = check_vllm_source(root)
    assert "GPUModelRunner.discard_request_mask missing (read by harness/engines/vllm/runner.py; v1/worker/gpu_model_runner.py)" in problems
    assert any(p.startswith("GPUModelRunner._sample parameters changed: (logits, spec_decode_metadata) -> (raw_logits") for p in problems)
    assert "GPUModelRunner._preprocess no longer hands out a slice of the persistent inputs_embeds buffer" in problems
    assert "CpuGpuBuffer.np missing (v1/utils.py)" in problems
    assert len(problems) == 4, problems


def test_the_runner_attributes_are_found_in_the_runner_code():
    found = runner_attributes()
    assert {"input_batch", "requests", "discard_request_mask", "optimistic_seq_lens_cpu", "query_start_loc",
            "inputs_embeds", "model", "vllm_config", "device"} <= found
    assert not {name for name in found if name.startswith("_moi") or name == "moi"}
