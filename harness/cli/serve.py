"""``moi-serve`` (``python -m harness.serve``): vLLM's OpenAI-compatible server with MoI chosen per request.

    moi-serve model=tiny serve.port=8000
    moi-serve model=qwq_32b serve.default='{method: moi, beta: 1.0}'

Starts ``python -m vllm.entrypoints.openai.api_server`` with the engine arguments MoI needs and
the offline engine's guard rails (:mod:`harness.engines.vllm.server`). Requests choose their
method through ``vllm_xargs``: ``{"moi_method": "moi", "moi_beta": 2.0}``; malformed values get an
HTTP 400 and the server goes on serving. Bound to 127.0.0.1 unless ``serve.host`` says otherwise.
"""

from __future__ import annotations

import os
import shlex
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.cli.common import config_dir, one_line_errors
from harness.cli.overrides import checked_main


@one_line_errors
def start(plain: dict) -> None:
    from harness.engines.vllm.server import server_command

    argv, env = server_command(plain)
    print(" ".join(shlex.quote(a) for a in argv), flush=True)
    if plain["serve"].get("dry_run"):
        return
    os.execve(sys.executable, argv, env)  # the server takes this process's place (and its signals)


@hydra.main(config_path=config_dir(), config_name="serve", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    start(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    """``moi-serve``: the command line checked (one line for a bad setting), then Hydra."""
    checked_main("serve", hydra_main)
