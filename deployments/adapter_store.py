"""Open the adapter store a config names, checked against its base model and engine limits.

One function so the ingress (which validates requests against the store) and the
engine replicas (which preload what the placement controller assigns them) judge
adapters by exactly the same rules."""

from __future__ import annotations

from adapters.quota import TenantQuota
from adapters.store import AdapterStore, open_store
from adapters.validation import base_model_info
from deployments.config import LorafleetConfig


def open_adapter_store(config: LorafleetConfig) -> AdapterStore:
    a = config.adapters
    return open_store(
        a.uri,
        base=base_model_info(config.model.source, config.model.served_name, config.model.aliases),
        max_lora_rank=config.engine.max_lora_rank,
        allowed_target_modules=config.engine.lora_target_modules,
        cache_dir=a.cache_dir,
        cache_max_bytes=a.cache_max_bytes,
        quota=TenantQuota(max_bytes=a.tenant_max_bytes, max_versions=a.tenant_max_versions),
        s3_endpoint_url=a.s3_endpoint_url,
        s3_region=a.s3_region,
        refresh_s=a.refresh_s,
    )
