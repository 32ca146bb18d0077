"""MoI on CUDA (``vllm``): the V1 GPU runner and worker subclasses.

Needs the V1 model runner: set ``VLLM_USE_V2_MODEL_RUNNER=0`` (vLLM 0.32 defaults to the V2
runner on CUDA when Triton is installed; the guard rails refuse it with that advice).
"""

from __future__ import annotations

import torch
from vllm.v1.worker.gpu_model_runner import GPUModelRunner
from vllm.v1.worker.gpu_worker import Worker

from harness.engines.vllm.rpc import MoIWorkerMixin
from harness.engines.vllm.runner import MoIRunnerMixin


class MoIGPUModelRunner(MoIRunnerMixin, GPUModelRunner):
    """vLLM's V1 GPU model runner with MoI."""

    def __init__(self, vllm_config, device: torch.device) -> None:
        super().__init__(vllm_config, device)
        self._moi_setup()


class MoIGPUWorker(MoIWorkerMixin, Worker):
    """vLLM's GPU worker, building the MoI runner through its documented hook."""

    def _make_model_runner(self) -> GPUModelRunner:
        return MoIGPUModelRunner(self.vllm_config, self.device)
