"""Grids: expansion, cells composed exactly as single runs, one engine for all cells, derived cells."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness.analysis.selection import derived_choices
from harness.errors import ConfigError
from harness.pipeline import grid, runner
from harness.pipeline.identity import run_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hydra_context():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        yield


def composed(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)


def test_expand_takes_every_combination_of_each_sub_grid():
    cells = grid.expand([
        {"task": ["aime", "countdown"], "method": ["moi"], "method.beta": [0.5, 2], "seed": [0, 1, 2]},
        {"task": ["gpqa_diamond"], "method": ["standard", "direct_mixture"]},
    ])
    assert len(cells) == 2 * 2 * 3 + 2
    assert cells[0] == {"task": "aime", "method": "moi", "method.beta": 0.5, "seed": 0}
    assert cells[-1] == {"task": "gpqa_diamond", "method": "direct_mixture"}
    for bad in ([{"task": "aime"}], [{"task": []}], ["aime"]):
        with pytest.raises(ValueError):
            grid.expand(bad)


def test_cells_are_the_runs_a_single_command_would_make(hydra_context, tmp_path):
    base = ["experiment=smoke", f"results_dir={tmp_path}"]
    cells = [{"task": "aime", "task.limit": 2, "method": "moi", "method.beta": 0.5, "sampling.temperature": 1.0,
              "seed": 1},
             {"task": "countdown", "method": "standard", "sampling.top_p": 0.5, "seed": 0}]
    configs = grid.compose_cells(base, cells)
    for cfg, cell in zip(configs, cells):
        single = composed(base + ["grid=null"] + [f"{key}={value}" for key, value in cell.items()])
        assert run_dir(cfg) == run_dir(single)
        assert cfg == {**single, "grid": None, "derive": None}
    assert configs[0]["method"]["beta"] == 0.5 and configs[0]["sampling"]["temperature"] == 1.0
    assert configs[1]["task"]["name"] == "countdown" and configs[1]["sampling"]["top_p"] == 0.5
    with pytest.raises(ValueError, match="grid key 'sampling.temp' is not a config key"):
        grid.compose_cells(base, [{"sampling.temp": 0.5}])


def test_a_grid_runs_in_one_engine_each_cell_in_its_own_directory(hydra_context, tmp_path, tiny_model_path, monkeypatch):
    loads = []
    real = runner.engine_class

    def counting(name):
        cls = real(name)
        loads.append(name)
        return cls

    monkeypatch.setattr(runner, "engine_class", counting)
    runner.release_engine()
    base = [f"model.path={tiny_model_path}", f"results_dir={tmp_path}", "task.data.path=tasks/offline/countdown4_256.jsonl",
            "task.limit=2", "sampling.max_tokens=8", "progress=false"]
    cells = grid.expand([{"method": ["standard", "moi"], "method.beta": [0.5, 2], "seed": [0, 1]}])
    summaries = runner.run(grid.compose_cells(base, cells))
    runner.release_engine()
    assert loads == ["transformers"]
    assert len(summaries) == 6  # Standard ignores beta: its cells collapse to one run per seed
    runs = sorted(p.parent.name.rsplit("_", 2)[0] for p in tmp_path.rglob("summary.json"))
    assert runs == sorted(f"{m}_T0.6_p0.95_s{s}" for m in ("standard", "moi-b0.5", "moi-b2") for s in (0, 1))
    for summary in summaries:
        assert summary["n"] == 2 and summary["complete"]
        assert (summary["mixed_steps"]["total"] > 0) == (summary["method"] == "moi")


def test_derived_cells_take_each_methods_best_configuration(write_run, tmp_path):
    for beta, outcomes in ((0.5, [1, 0]), (2.0, [1, 1])):
        for task in ("aime", "countdown"):
            write_run(tmp_path, model="tiny", task=task, method="moi", beta=beta, correct=outcomes)
    for temperature, outcomes in ((0.6, [0, 0]), (1.0, [1, 0])):
        for task in ("aime", "countdown"):
            write_run(tmp_path, model="tiny", task=task, method="standard", temperature=temperature, correct=outcomes)
    cfg = {"model": {"name": "tiny"}, "results_dir": str(tmp_path), "sampling": {"temperature": 0.6, "top_p": 0.95},
           "derive": {"source": None, "over": ["aime", "countdown"], "methods": ["standard", "moi"]}}
    choices = derived_choices(cfg["derive"], cfg["model"]["name"], cfg["results_dir"], cfg["sampling"])
    cells = grid.derive_cells([{"task": "gpqa_diamond", "seed": 0}], choices)
    assert cells == [
        {"task": "gpqa_diamond", "seed": 0, "method": "standard", "sampling.temperature": 1.0, "sampling.top_p": 0.95},
        {"task": "gpqa_diamond", "seed": 0, "method": "moi", "sampling.temperature": 0.6, "sampling.top_p": 0.95,
         "method.beta": 2.0},
    ]
    with pytest.raises(ConfigError, match="derive: no complete runs of model other with method standard"):
        derived_choices(cfg["derive"], "other", cfg["results_dir"], cfg["sampling"])
