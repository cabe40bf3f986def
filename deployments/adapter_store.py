"""Open the adapter store a config names, checked against its base models and engine limits.

One function so the ingress (which validates requests against the store) and the
engine replicas (which preload what the placement controller assigns them) judge
adapters by exactly the same rules. The ingress opens it with every base of the fleet;
an engine replica with its own base's view (`LorafleetConfig.for_base`), so an adapter
of another base could not even be loaded there (defense in depth behind routing)."""

from __future__ import annotations

from adapters.quota import TenantQuota
from adapters.store import AdapterStore, open_store
from adapters.validation import ServedBase, base_model_info
from deployments.config import LorafleetConfig


def served_bases(config: LorafleetConfig) -> tuple[ServedBase, ...]:
    """Every base of `config` as adapter validation sees it: its module shapes (read from
    its source: a folder, `s3://` headers or the hub's config.json) and its engine limits."""
    bases = []
    for name, view in config.bases().items():
        m = view.model
        info = base_model_info(m.source, name, m.aliases, s3_endpoint_url=m.s3_endpoint_url, s3_region=m.s3_region)
        bases.append(ServedBase(info, view.engine.max_lora_rank, view.engine.lora_target_modules))
    return tuple(bases)


def open_adapter_store(config: LorafleetConfig) -> AdapterStore:
    a = config.adapters
    return open_store(
        a.uri,
        bases=served_bases(config),
        cache_dir=a.cache_dir,
        cache_max_bytes=a.cache_max_bytes,
        quota=TenantQuota(max_bytes=a.tenant_max_bytes, max_versions=a.tenant_max_versions),
        s3_endpoint_url=a.s3_endpoint_url,
        s3_region=a.s3_region,
        refresh_s=a.refresh_s,
    )
