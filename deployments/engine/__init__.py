"""The engine a replica runs, behind a small interface, and what it streams back.

    protocol.py     what a replica streams to the ingress (ResponseHead, body, FinalUsage)
    vllm_engine.py  VLLMEngine: vLLM's AsyncLLM with LoRA and vLLM's own OpenAI layer
    lifetime.py     EngineCore processes die with their replica (PR_SET_PDEATHSIG)
    vllm_plugin.py  the vLLM general plugin (LoRA kernel fix), active only in lorafleet's engines

May import `adapters/`, `cluster/`, `deployments.config`, `deployments.errors` and
`observability/`; never `ray.serve`, `api/` or `tenancy/`.
"""
