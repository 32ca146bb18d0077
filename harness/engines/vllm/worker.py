"""The vLLM worker class that runs MoI: ``worker_cls="harness.engines.vllm.worker.MoIWorker"``.

It resolves to the CPU or the GPU worker of the platform vLLM runs on. Both build the MoI model
runner and answer ``collective_rpc`` calls for MoI counters:

    llm.collective_rpc("moi_request_stats", args=([request_id, ...],))   # per request
    llm.collective_rpc("moi_summary")                                     # whole engine
"""

from __future__ import annotations

from vllm.platforms import current_platform

if current_platform.is_cpu():
    from harness.engines.vllm.cpu import MoICPUWorker as MoIWorker
else:
    from harness.engines.vllm.gpu import MoIGPUWorker as MoIWorker

__all__ = ["MoIWorker"]
