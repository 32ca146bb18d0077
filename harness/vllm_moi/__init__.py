"""Mixture of Inputs inside vLLM 0.32 through its extension points (no monkey-patching).

Any vLLM-based tool decodes with MoI when given these engine arguments::

    worker_cls="harness.vllm_moi.worker.MoIWorker"
    logits_processors=["harness.vllm_moi.validator:MoIValidator"]   # refuses bad requests early
    enable_prefix_caching=False, async_scheduling=False               # (guard rails check these)
    enable_prompt_embeds=True                                          # (the worker sets it anyway)
    additional_config={"moi": {"method": "moi", "beta": 1.0}}          # optional process default

plus ``VLLM_USE_V2_MODEL_RUNNER=0`` on GPUs. Requests choose their own method through
``SamplingParams(extra_args={"moi_method": "moi", "moi_beta": 2.0, ...})`` (the server's
``vllm_xargs``); ``MIXINPUTS_BETA=<beta>`` is the reference package's process default.
"""

WORKER_CLS = "harness.vllm_moi.worker.MoIWorker"
VALIDATOR_CLS = "harness.vllm_moi.validator:MoIValidator"

# Engine arguments that every MoI engine needs (the worker refuses to start without them).
ENGINE_ARGS = {
    "worker_cls": WORKER_CLS,
    "logits_processors": [VALIDATOR_CLS],
    "enable_prefix_caching": False,
    "async_scheduling": False,
    "enable_prompt_embeds": True,  # the worker sets it too: the model is fed embeddings
}
