"""The vLLM engine, with every decoding method inside vLLM 0.32's model runner (no monkey-patching).

Any vLLM-based tool decodes with MoI when given these engine arguments::

    worker_cls="harness.engines.vllm.worker.MoIWorker"
    logits_processors=["harness.engines.vllm.validator:MoIValidator"]   # refuses bad requests early
    enable_prefix_caching=False, async_scheduling=False               # (guard rails check these)
    enable_prompt_embeds=True                                          # (the worker sets it anyway)
    additional_config={"moi": {"method": "moi", "beta": 1.0}}          # optional process default

plus ``VLLM_USE_V2_MODEL_RUNNER=0`` on GPUs. Requests choose their own method through
``SamplingParams(extra_args={"moi_method": "moi", "moi_beta": 2.0, ...})`` (the server's
``vllm_xargs``); ``MIXINPUTS_BETA=<beta>`` is the reference package's process default.
"""

WORKER_CLS = "harness.engines.vllm.worker.MoIWorker"
VALIDATOR_CLS = "harness.engines.vllm.validator:MoIValidator"

# Engine arguments that every MoI engine needs (the worker refuses to start without them).
ENGINE_ARGS = {
    "worker_cls": WORKER_CLS,
    "logits_processors": [VALIDATOR_CLS],
    "enable_prefix_caching": False,
    "async_scheduling": False,
    "enable_prompt_embeds": True,  # the worker sets it too: the model is fed embeddings
}
