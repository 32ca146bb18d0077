"""Adding a decoding method is one file: a toy method defined here runs through both engines, the
server's request validator, run naming and the results table, with nothing else changed."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.engines.base import Request
from harness.methods import Feedback, Method, Param, Prepared, make_spec, method_names
from harness.methods import registry as method_registry

pytestmark = pytest.mark.vllm


class ToyAverage(Method):
    """The next input: ``(1 - weight) E[emitted] + weight E[runner-up]`` (the second most probable token)."""

    name = "toy_average"
    label = "Toy average"
    params = (Param("weight", 0.5, low=0, high=1, help="the runner-up's share"),)
    examples = ({"weight": 0.5},)

    def tag(self, params: dict) -> str:
        return f"toy-w{params['weight']:g}"

    def prepare(self, logits: torch.Tensor, rows) -> Prepared:
        return Prepared(kept={"second": torch.topk(logits, 2, dim=-1).indices[:, 1]})

    def feedback(self, prepared: Prepared, emitted: torch.Tensor, rows) -> Feedback:
        weight = rows.params["weight"]
        ids = torch.stack([emitted.long(), prepared.kept["second"].long()], dim=1)
        weights = torch.stack([1 - weight, weight], dim=1)
        return Feedback(ids, weights, torch.ones(len(emitted), dtype=torch.bool, device=emitted.device))


@pytest.fixture(scope="module")
def toy():
    method_registry.register(ToyAverage)
    yield make_spec("toy_average", weight=0.5)
    del method_registry._REGISTRY["toy_average"]


def test_the_toy_is_registered_like_any_method(toy):
    assert "toy_average" in method_names()
    assert toy.identity() == {"name": "toy_average", "weight": 0.5} and toy.tag() == "toy-w0.5"
    with pytest.raises(ValueError, match=r"weight must be a finite number in \[0, 1\], got 2"):
        make_spec("toy_average", weight=2)


def test_both_engines_run_the_toy_the_same(toy, tiny_model_cfg):
    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm.engine import VLLMEngine

    requests = [Request(id=f"{m}{i}", prompt="the answer number is " * (i + 1), method=spec, temperature=0, max_tokens=16)
                for i in range(3) for m, spec in (("toy", toy), ("std", make_spec()))]
    want = {r.id: c for r, c in TransformersEngine(tiny_model_cfg, {}).generate(requests)}
    engine = VLLMEngine(tiny_model_cfg, {"enforce_eager": True, "kv_cache_memory_bytes": 16 << 20})
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
    finally:
        engine.close()
    for request in requests:
        assert got[request.id].token_ids == want[request.id].token_ids, request.id
        expected = got[request.id].completion_tokens - 1 if request.method == toy else 0
        assert got[request.id].mixed_steps == want[request.id].mixed_steps == expected
    assert any(got[f"toy{i}"].token_ids != got[f"std{i}"].token_ids for i in range(3))


def test_the_server_validator_takes_and_refuses_the_toy(toy):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    from harness.engines.vllm.validator import MoIValidator

    MoIValidator.validate_params(SamplingParams(extra_args={"moi_method": "toy_average", "moi_weight": 0.25}))
    with pytest.raises(VLLMValidationError, match="moi_weight must be a finite number in"):
        MoIValidator.validate_params(SamplingParams(extra_args={"moi_method": "toy_average", "moi_weight": 3}))


def test_runs_and_the_table_read_the_toy_from_the_registry(toy, tiny_model_path, tmp_path):
    from harness.analysis.table import build
    from harness.cli.common import config_dir
    from harness.pipeline import runner

    overrides = [f"model.path={tiny_model_path}", f"results_dir={tmp_path}", "task.data.path=tasks/offline/countdown4_256.jsonl",
                 "task.limit=2", "sampling.max_tokens=8", "progress=false"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        base = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
    toy_cfg = {**base, "method": {"name": "toy_average", "weight": 0.5}}
    summaries = runner.run([toy_cfg])
    summaries += runner.run([base])
    runner.release_engine()
    assert {s["method"] for s in summaries} == {"toy_average", "standard"}
    assert any(p.name.startswith("toy-w0.5_") for p in tmp_path.rglob("*") if p.is_dir())
    assert summaries[0]["mixed_steps"]["total"] > 0
    markdown, _ = build(tmp_path)
    assert "Toy average" in markdown and "Standard" in markdown
