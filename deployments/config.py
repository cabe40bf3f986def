"""The one configuration schema of a lorafleet deployment.

The CLI (`lorafleet serve --config`), the tests and the Helm chart's `serveConfigV2`
all go through `load_config` / `LorafleetConfig.model_validate`, so a value that is
wrong anywhere fails the same way everywhere: at start, naming the field path.

Models are frozen and `extra="forbid"` so that a typo in YAML (`max_lora=4`) is an
error instead of a silently ignored key.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from adapters.config_files import field_problems, read_yaml
from adapters.validation import FORBIDDEN_TARGET_MODULES, PROJECTION_MODULES
from cluster.autoscaling.settings import AutoscalingSettings, ReplicaProfile
from cluster.placement.settings import PlacementSettings
from cluster.routing.registry import POLICIES
from cluster.routing.settings import RoutingSettings

class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# A path or URI: non-empty and free of NUL bytes, which no filesystem accepts (an
# unchecked NUL made path resolution raise a bare ValueError instead of a ConfigError).
PathOrUri = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\x00]+$")]


class _ModelSource(_Strict):
    source: PathOrUri = Field(
        description="Base model: a local Hugging Face model directory, an `s3://bucket/prefix` holding one, or a "
        "Hugging Face hub id. S3 and hub models are fetched once per node into a node-local cache "
        "(deployment.model_cache_dir) before vLLM starts. Relative paths resolve against the config file's folder."
    )
    served_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$",
        description="The `model` name clients use for the base model; adapters list it as `parent`. Unique in the fleet.",
    )
    aliases: tuple[str, ...] = Field(
        default=(),
        description="Other names an adapter's `base_model_name_or_path` may carry and still be "
        "accepted as trained on this base (e.g. the hub id it was trained from). Unique in the fleet.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of the S3-compatible store an `s3://` source lives in (MinIO, Ceph, moto); "
        "None for AWS S3 (or AWS_ENDPOINT_URL). Credentials come from boto3's standard chain, never from this file."
    )
    s3_region: str | None = Field(default=None, description="Region of an `s3://` source's bucket; None lets boto3 decide.")


class EngineConfig(_Strict):
    max_loras: PositiveInt = Field(default=2, description="Adapters resident in the accelerator's LoRA slots at once (vLLM max_loras).")
    max_cpu_loras: PositiveInt = Field(default=4, description="Adapters kept in host memory (vLLM max_cpu_loras); must be >= max_loras.")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = Field(default=16, description="Largest adapter rank accepted; adapters above it are refused.")
    lora_target_modules: tuple[str, ...] = Field(
        default=PROJECTION_MODULES,
        description="Module suffixes the engine applies LoRA to. Must not include lm_head or embeddings "
        "(vLLM 0.32 crashes on batched prompt logprobs when lm_head carries LoRA).",
    )
    max_model_len: PositiveInt = Field(default=512, description="Longest prompt + completion in tokens.")
    max_num_seqs: PositiveInt = Field(default=64, description="Sequences the engine batches at once.")
    stream_interval: PositiveInt = Field(
        default=4,
        description="A streamed response's tokens are sent every this many tokens (vLLM --stream-interval); the "
        "first token always goes at once. Every streamed message crosses two Ray hops here (replica -> ingress -> "
        "HTTP proxy), so 1 (one message per token) spends a large share of a busy machine on transport.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weights and activations dtype. float32 on CPU keeps outputs comparable to a reference."
    )
    kv_cache_gib: PositiveInt = Field(default=1, description="KV cache size per replica in whole GiB on the CPU backend (VLLM_CPU_KVCACHE_SPACE); GPUs use gpu_memory_utilization instead.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Fraction of GPU memory vLLM may use (GPU only).")
    enforce_eager: bool = Field(default=True, description="Skip graph capture: faster start, required on CPU.")
    seed: int = Field(default=0, description="Engine sampling seed.")
    tensor_parallel_size: PositiveInt | None = Field(
        default=None,
        description="GPUs one engine splits each layer over (vLLM --tensor-parallel-size). None: "
        "deployment.replica_gpus / pipeline_parallel_size when replica_gpus > 1, else 1. A replica's GPUs are a Ray "
        "placement group packed on one node (STRICT_PACK) and vLLM's workers run on it (its Ray executor).",
    )
    pipeline_parallel_size: PositiveInt = Field(
        default=1,
        description="Pipeline stages of one engine (vLLM --pipeline-parallel-size), on the same node as its tensor "
        "parallel ranks; tensor_parallel_size x pipeline_parallel_size = deployment.replica_gpus.",
    )

    @model_validator(mode="after")
    def _check_slots(self) -> "EngineConfig":
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        bad = FORBIDDEN_TARGET_MODULES.intersection(self.lora_target_modules)
        if bad:
            raise ValueError(
                f"lora_target_modules must not include {sorted(bad)}: LoRA on lm_head/embeddings "
                "crashes vLLM 0.32 on batched prompt logprobs"
            )
        return self


class DeploymentConfig(_Strict):
    num_replicas: PositiveInt = Field(default=2, description="Engine replicas (one vLLM engine each).")
    replica_cpus: PositiveFloat = Field(default=1.0, description="Ray CPUs reserved per engine replica.")
    replica_gpus: float = Field(
        default=0.0, ge=0,
        description="Ray GPUs per engine replica: 0 on CPU, 1 for one GPU, N > 1 (a whole number) for a tensor/pipeline "
        "parallel engine over N GPUs of one node (a placement group of N one-GPU bundles, STRICT_PACK). Routing, "
        "placement and metrics treat such a replica as one replica.",
    )
    accelerator_type: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="GPU type the replicas need (Ray's accelerator_type, e.g. H100, A100, L4): they are placed only on "
        "nodes where Ray detected that GPU. None: any GPU.",
    )
    ray_resources: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")], PositiveFloat] = Field(
        default_factory=dict,
        description="Custom Ray resources each engine replica reserves (its first placement-group bundle for a "
        "parallel engine), e.g. {lorafleet-base-llama-70b: 0.001} to keep a base on the nodes whose `ray start "
        "--resources` offer it (in the Helm chart: that worker group's rayStartParams).",
    )
    max_ongoing_requests: PositiveInt | None = Field(
        default=None,
        description="Requests one engine replica accepts at once (Ray Serve's per-replica limit); the router queues "
        "the rest. None: the engine's max_num_seqs, what it batches. Lower starves the engine's batching (warned at "
        "start); higher queues inside the engine, where the router can no longer move requests to a freer replica.",
    )
    max_queued_requests: PositiveInt = Field(
        default=256, description="Requests waiting for a replica before the API answers 503 with Retry-After."
    )
    ingress_replicas: PositiveInt = Field(default=1, description="Replicas of the HTTP ingress.")
    ingress_cpus: float = Field(default=0.1, ge=0, description="Ray CPUs reserved per ingress replica.")
    ingress_max_ongoing_requests: int = Field(
        default=0, ge=0,
        description="Completion requests one ingress replica admits at once; more get 503 with Retry-After at "
        "once instead of queueing. 0 = num_replicas x max_ongoing_requests + max_queued_requests.",
    )
    health_check_period_s: PositiveFloat = Field(default=5.0, description="How often Ray Serve checks that a replica's engine is alive.")
    stats_report_period_s: PositiveFloat = Field(default=1.0, description="How often each replica reports its stats to the fleet controller.")
    drain_timeout_s: PositiveFloat = Field(
        default=10.0,
        description="On shutdown (or when a replica is removed), how long an ingress or engine replica keeps "
        "serving its in-flight requests before it is stopped; requests still running then are cut.",
    )
    engine_threads: int = Field(
        default=0, ge=0, description="CPU threads per engine (CPU backend only); 0 lets vLLM decide."
    )
    cpu_binding: Literal["per_replica", "auto", "none"] = Field(
        default="auto",
        description="CPU backend only: where each engine's OpenMP threads run. per_replica: replica k on this "
        "node gets its own cores (ceil(replica_cpus) of them, wrapping when the node has fewer), so engines stop "
        "sharing one core; auto: vLLM's own binding (every engine on a node picks the same cores); none: no binding. "
        "auto is the default: on a machine with few cores per_replica leaves the serving path (ingress, proxy, Ray) "
        "no core of its own (bench/README.md, placement-live).",
    )
    model_cache_dir: str | None = Field(
        default=None,
        description="Node-local folder where base models given as s3:// URIs or hub ids are fetched, once per node, "
        "before vLLM starts (and read by the ingress's tokenizer); None: <system temp>/lorafleet-model-cache. Fleet-wide.",
    )


class AdapterStoreConfig(_Strict):
    uri: PathOrUri = Field(
        description="Where adapters live: a local directory, or an S3-compatible bucket `s3://bucket/prefix` "
        "(credentials from the standard AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY env vars, a profile "
        "or an instance role; never from this file). Relative paths resolve against the config file."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, moto); None for AWS S3 (or AWS_ENDPOINT_URL)."
    )
    s3_region: str | None = Field(default=None, description="Region of the S3 bucket; None lets boto3 decide (AWS_REGION).")
    refresh_s: float = Field(
        default=2.0, ge=0, le=300,
        description="How long an S3 store's listing is cached per process: a newly published (or deleted) adapter "
        "is seen by every replica within this time. A local directory is re-read on every call.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Node-local folder where replicas keep verified copies of published adapter versions (named by "
        "content sha256); None: <system temp>/lorafleet-adapter-cache.",
    )
    max_upload_bytes: PositiveInt = Field(
        default=256 * 1024 * 1024, description="Largest adapter archive (tar.gz) the admin API accepts, compressed; larger gets 413."
    )
    max_unpacked_bytes: PositiveInt = Field(
        default=1024 * 1024 * 1024, description="Largest total size an uploaded archive may unpack to (tar-bomb guard); larger gets 413."
    )
    max_files: PositiveInt = Field(
        default=64, description="Most members (files and folders) an uploaded or imported adapter may hold; more gets 413."
    )
    max_concurrent_uploads: PositiveInt = Field(
        default=2,
        description="Adapter uploads and imports one ingress replica processes at once (each spools to disk and "
        "unpacks); more get 503 with Retry-After.",
    )
    upload_timeout_s: PositiveFloat = Field(
        default=300.0, description="Longest an adapter upload's body may take to arrive; slower gets 408."
    )
    import_roots: tuple[PathOrUri, ...] = Field(
        default=(),
        description="Folders (absolute paths) and `s3://bucket/prefix` locations an admin may import adapters from "
        "with POST /v1/adapters {\"name\", \"uri\"}. Empty (the default): imports by URI are off. Never the store itself.",
    )
    cache_max_bytes: PositiveInt | None = Field(
        default=20 * 1024**3,
        description="Size cap of the node-local adapter cache (cache_dir, shared by the node's replicas): least recently "
        "used versions are removed past it, never one an engine holds in use. None: no cap.",
    )
    tenant_max_bytes: PositiveInt | None = Field(
        default=10 * 1024**3,
        description="Storage quota: most bytes of adapter versions one tenant may own in the registry (uploads in flight "
        "included); an upload past it gets 403 naming this field. Operator-owned adapters count against nobody. None: no limit.",
    )
    tenant_max_versions: PositiveInt | None = Field(
        default=1000,
        description="Storage quota: most adapter versions one tenant may own (a claimed name with no version left counts "
        "as one); an upload past it gets 403 naming this field. None: no limit.",
    )
    fetch_latency_ms: int = Field(
        default=0, ge=0, le=60_000,
        description="Emulated extra time of every adapter read from the store, spent inside the engine's load path "
        "(so it stalls the engine's batch, as a real slow read does). 0 in production; benchmarks set it to "
        "reproduce a GPU's load-to-decode-step cost ratio on a CPU engine.",
    )

    @model_validator(mode="after")
    def _check_import_roots(self) -> "AdapterStoreConfig":
        for root in self.import_roots:
            if not (root.startswith("s3://") or Path(root).is_absolute()):
                raise ValueError(f"adapters.import_roots: {root!r} must be an absolute folder path or an s3://bucket/prefix")
        return self


class AuthConfig(_Strict):
    enabled: bool = Field(
        default=False,
        description="Require an API key (`Authorization: Bearer <key>`) on every API route but /health. "
        "Off for the local demo; the Helm chart turns it on.",
    )
    keys_file: str | None = Field(
        default=None,
        description="YAML/JSON file listing the API keys as sha256 hashes with tenant, role and limits "
        "(`lorafleet keys create` prints an entry); a mounted Kubernetes Secret works. Re-read when it changes. "
        "Required when enabled; relative paths resolve against the config file.",
    )

    @model_validator(mode="after")
    def _check_file(self) -> "AuthConfig":
        if self.enabled and not self.keys_file:
            raise ValueError("server.auth.keys_file is required when server.auth.enabled is true")
        return self


class LimitsConfig(_Strict):
    max_tokens: PositiveInt | None = Field(
        default=None,
        description="Largest max_tokens / max_completion_tokens a request may ask for (400 above it); requests "
        "without one are capped at it. None: only the model's context length bounds it.",
    )
    max_n: PositiveInt = Field(default=8, description="Largest `n` (choices per prompt) a request may ask for (400 above it).")
    max_prompt_tokens: PositiveInt | None = Field(
        default=None,
        description="Longest prompt in tokens, counted with the base model's tokenizer at the ingress (400 above it). "
        "None: only the model's context length bounds it.",
    )
    requests_per_second: PositiveFloat | None = Field(
        default=None,
        description="Default per-key request rate (token bucket, bursts of up to max(1, rate) requests); 429 with "
        "Retry-After above it. A key's own `limits` in the keys file override it. None: unlimited.",
    )
    tokens_per_minute: PositiveInt | None = Field(
        default=None,
        description="Default per-key token budget per minute: prompt + max_tokens is reserved when a request is "
        "admitted and corrected with the real usage when it ends; 429 with Retry-After when exhausted. None: unlimited.",
    )
    when_store_down: Literal["local", "open", "closed"] = Field(
        default="local",
        description="With a shared store (server.usage.backend: postgres) the per-key buckets live in the database, "
        "exact across ingress replicas. While it is unreachable: `local` limits each replica to 1/ingress_replicas of "
        "each key's limits in memory (approximate, as without a shared store); `open` applies no rate limits; `closed` "
        "answers 503 to every request a limit applies to. Requests never wait on a database known to be down.",
    )
    store_timeout_s: PositiveFloat = Field(
        default=0.5,
        description="Longest a request waits for the shared rate-limit store before it is treated as down "
        "(then `when_store_down` applies, and a background probe finds it again).",
    )


class UsageConfig(_Strict):
    enabled: bool = Field(default=True, description="Record every completed request's token usage per key and adapter in the usage ledger.")
    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="Where the usage ledger lives. `sqlite`: an embedded file (one node; several ingress replicas only "
        "on one node). `postgres`: a PostgreSQL database shared by every ingress replica on every node, which also "
        "holds the per-key rate-limit buckets, so limits are exact across replicas and restarts.",
    )
    postgres_dsn_env: str = Field(
        default="LORAFLEET_USAGE_POSTGRES_DSN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the PostgreSQL DSN (postgresql://user:password@host:5432/db), "
        "e.g. filled from a Kubernetes Secret; the DSN itself is never part of the config nor logged. backend: postgres only.",
    )
    ledger_path: str | None = Field(
        default=None,
        description="SQLite file of the usage ledger. None: `.lorafleet/usage.sqlite` inside the adapter store "
        "(on the store's volume, so it survives restarts). All ingress replicas must reach the same local file. "
        "backend: sqlite only.",
    )
    journal_dir: str | None = Field(
        default=None,
        description="Folder of the ledger's write-ahead journal (one append per request; what a SIGKILLed or "
        "disconnected ingress has not written yet is applied from it later, exactly once). Must be on the node's own "
        "disk. None: `<ledger_path>.journal` with sqlite; `usage-journal` in the node-local adapter cache "
        "(adapters.cache_dir) with postgres, which adds a subfolder per database.",
    )
    flush_period_s: PositiveFloat = Field(default=0.5, description="How often recorded usage is written to the ledger (and on shutdown).")
    abort_report_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="How long the ingress waits for an engine's count of what it produced for a request whose client "
        "left mid-generation; after it, the request is billed what the ingress saw leave the engine (a lower bound).",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> "UsageConfig":
        if self.backend == "postgres" and self.ledger_path:
            raise ValueError("server.usage.ledger_path is the SQLite file: leave it unset with backend: postgres")
        return self


class ServerConfig(_Strict):
    host: str = Field(default="127.0.0.1", description="Address the HTTP proxy binds (0.0.0.0 only inside Kubernetes).")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port of the OpenAI-compatible API.")
    request_timeout_s: PositiveFloat = Field(default=300.0, description="Longest a request may take end to end.")
    max_request_bytes: PositiveInt = Field(default=1_048_576, description="Largest accepted request body (413 above it).")
    max_queue_wait_s: PositiveFloat = Field(
        default=5.0,
        description="Admission bound: a completion request is admitted only if the engines can start it within this "
        "long (expected from the requests queued ahead and the rate requests complete); otherwise it gets 503 with "
        "Retry-After at once, instead of queueing and stretching every admitted request's latency.",
    )
    max_added_latency_s: PositiveFloat | None = Field(
        default=None,
        description="Latency-following admission (off when unset): the ingress also keeps a concurrency limit that "
        "follows measured latency, so admitted requests take at most about this much longer than the fleet's "
        "unloaded time (smoothed; Little's law sets the limit). On engines whose step time grows with the batch "
        "(CPU engines; GPUs past their memory-bound regime) a free slot is not free latency, and this bounds "
        "admitted latency under overload. Off by default: a burst the engines can batch is then served slowly "
        "rather than partly refused with 503.",
    )
    body_read_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="Longest a request body may take to arrive (408 after it). Bodies are read before a request "
        "takes an admission slot, so a slow client holds only a read slot, and only this long.",
    )
    metrics_port: int = Field(
        default=8080, ge=1, le=65535,
        description="Port of the Prometheus metrics endpoint of the Ray cluster `lorafleet serve` starts "
        "(Ray's own endpoint: lorafleet's, Ray's and Ray Serve's metrics). Used only when `serve` starts a "
        "local cluster; nodes started by `ray start` (KubeRay) use their --metrics-export-port (8080).",
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys, tenants and roles.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Per-request bounds and per-key rate limits.")
    usage: UsageConfig = Field(default_factory=UsageConfig, description="The usage ledger (requests and tokens per key and adapter).")


def _model_of(dataclass_type: type, name: str) -> type[BaseModel]:
    """A strict pydantic model with the dataclass's fields, types, defaults and
    descriptions: the pure policy code owns its knobs, the config schema mirrors them
    without a hand-written copy that could drift."""
    hints = typing.get_type_hints(dataclass_type)
    fields = {
        f.name: (hints[f.name], Field(default=f.default, description=f.metadata.get("description")))
        for f in dataclasses.fields(dataclass_type)
    }
    return create_model(name, __base__=_Strict, **fields)


RoutingSettingsModel = _model_of(RoutingSettings, "RoutingSettingsModel")
RoutingPolicyName = Literal[tuple(sorted(POLICIES))]  # type: ignore[valid-type]


class RoutingConfig(_Strict):
    policy: RoutingPolicyName = Field(
        default="adapter_affinity",
        description="Request routing policy: adapter_affinity (lorafleet's), pow2 (Ray Serve's default "
        "router), multiplex (Ray Serve LLM-style model affinity), lora_affinity_llmd, random.",
    )
    stats_period_s: PositiveFloat = Field(default=0.5, description="How often replicas publish their stats to routers.")
    settings: RoutingSettingsModel = Field(default_factory=RoutingSettingsModel, description="Knobs of the adapter_affinity policy.")

    @model_validator(mode="after")
    def _check_settings(self) -> "RoutingConfig":
        self.routing_settings()  # RoutingSettings checks ranges and cross-field rules
        return self

    def routing_settings(self) -> RoutingSettings:
        return RoutingSettings(**self.settings.model_dump())


class ObservabilityConfig(_Strict):
    adapter_label_top_k: int = Field(
        default=50, ge=0,
        description="Adapters that get their own `adapter` label value in lorafleet's metrics, per process "
        "(the busiest, reviewed every adapter_label_review_s); all others are counted as `_other`. At most "
        "2x this many names are ever used per process, which bounds the series count (see cluster/labels.py).",
    )
    adapter_label_review_s: PositiveFloat = Field(
        default=300.0,
        description="How often (seconds) the named adapters are compared with recent traffic; a busier unnamed "
        "adapter (at least 2x the requests) replaces the least requested named one.",
    )
    vllm_metrics: bool = Field(
        default=True,
        description="Export vLLM's own per-step metrics (ray_vllm_*: queue, running, KV cache, preemptions, "
        "latency histograms) through Ray, as Ray Serve LLM does; the dashboards' vLLM panels read them. They cost "
        "CPU in the engine replica and Ray's metrics agent on every step (bench/README.md, serving overhead).",
    )


PlacementSettingsModel = _model_of(PlacementSettings, "PlacementSettingsModel")


class PlacementConfig(_Strict):
    enabled: bool = Field(
        default=True,
        description="Run the placement controller: it estimates demand per adapter, plans which replicas hold "
        "which adapters, replicas preload their share, and routers prefer the planned homes. Off: routing alone.",
    )
    settings: PlacementSettingsModel = Field(default_factory=PlacementSettingsModel, description="Knobs of the placement planner.")

    @model_validator(mode="after")
    def _check_settings(self) -> "PlacementConfig":
        self.placement_settings()
        return self

    def placement_settings(self) -> PlacementSettings:
        return PlacementSettings(**self.settings.model_dump())


def _partial_model(model: type[BaseModel], name: str, *, leave_out: tuple[str, ...] = ()) -> type[BaseModel]:
    """A strict model with `model`'s fields, each optional and unset by default (nested
    models partial too): a per-base override names only what differs from the fleet-wide
    section, keeps every field's type, bounds and description, and rejects typos."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in leave_out:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _partial_model(annotation, f"{name}{annotation.__name__.removesuffix('Model')}")
        fields[field_name] = (Optional[annotation], FieldInfo.merge_field_infos(info, default=None, default_factory=None))
    return create_model(name, __base__=_Strict, **fields)


# Deployment fields that describe the whole fleet (the ingress, the controller's report
# period, the nodes' model cache): only in the top-level `deployment` section.
FLEET_WIDE_DEPLOYMENT = ("ingress_replicas", "ingress_cpus", "ingress_max_ongoing_requests", "stats_report_period_s",
                         "model_cache_dir")
# The sections a base may override; the top-level ones are the fleet's defaults.
PER_BASE_SECTIONS = ("engine", "deployment", "routing", "placement")

EngineOverrides = _partial_model(EngineConfig, "EngineOverrides")
DeploymentOverrides = _partial_model(DeploymentConfig, "DeploymentOverrides", leave_out=FLEET_WIDE_DEPLOYMENT)
RoutingOverrides = _partial_model(RoutingConfig, "RoutingOverrides")
PlacementOverrides = _partial_model(PlacementConfig, "PlacementOverrides")

ENGINE_DEPLOYMENT = "EngineReplica"  # the first base's engine deployment (dashboards, alerts, Helm overrides name it)


def slug(served_name: str) -> str:
    """`Llama-3.1-70B/Instruct` -> `llama-3-1-70b-instruct`: a base's name in deployment
    names, Ray resource names and Kubernetes labels."""
    return re.sub(r"[^a-z0-9]+", "-", served_name.lower()).strip("-")


class ModelConfig(_ModelSource):
    """One base model of the fleet: where it comes from, what clients call it, and how its
    engines differ from the fleet-wide sections (deep-merged over them)."""

    engine: EngineOverrides | None = Field(default=None, description="This base's engine settings that differ from the top-level `engine`.")
    deployment: DeploymentOverrides | None = Field(
        default=None, description="This base's engine deployment settings that differ from the top-level `deployment` "
        "(not the fleet-wide ingress, stats period and model cache fields).")
    routing: RoutingOverrides | None = Field(default=None, description="This base's request router settings that differ from the top-level `routing`.")
    placement: PlacementOverrides | None = Field(default=None, description="This base's placement settings that differ from the top-level `placement`.")

    @field_validator("deployment", mode="before")
    @classmethod
    def _no_fleet_wide_fields(cls, value: object) -> object:
        if isinstance(value, dict):
            fleet_wide = sorted(set(value) & set(FLEET_WIDE_DEPLOYMENT))
            if fleet_wide:
                raise ValueError(f"{', '.join(fleet_wide)} describe(s) the whole fleet: set it in the top-level "
                                 "`deployment` section, not per base")
        return value

    @field_serializer(*PER_BASE_SECTIONS)
    def _only_what_is_set(self, override: BaseModel | None, info):
        """An override dumps only the fields it sets, so a dumped config (what replicas and
        Helm receive) means the same when read back: unset stays "the fleet's value"."""
        return None if override is None else override.model_dump(mode=info.mode, exclude_unset=True)

    def source_only(self) -> "ModelConfig":
        return self.model_copy(update={section: None for section in PER_BASE_SECTIONS})


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _either_model_or_models(schema: dict) -> None:
    """The JSON schema (Helm's values.schema.json) accepts what the validator does: one
    base as `model:`, or a list as `models:`, exactly one of them."""
    schema["properties"]["model"] = {**schema["properties"]["models"]["items"],  # ModelConfig's (internal) ref
                                     "description": "One base model: the same as a one-element `models:` list."}
    schema["required"] = [r for r in schema.get("required", []) if r != "models"]
    schema["oneOf"] = [{"required": ["model"]}, {"required": ["models"]}]


AutoscalingSettingsModel = _model_of(AutoscalingSettings, "AutoscalingSettingsModel")
# One replica's step costs for sizing; its batch and slot sizes come from `engine`.
_FROM_ENGINE = {"max_num_seqs": "max_num_seqs", "gpu_slots": "max_loras", "cpu_slots": "max_cpu_loras"}
StepCostsModel = create_model(
    "StepCostsModel", __base__=_Strict,
    **{f.name: (float, Field(default=f.default)) for f in dataclasses.fields(ReplicaProfile) if f.name not in _FROM_ENGINE},
)


class AutoscalingConfig(_Strict):
    enabled: bool = Field(
        default=False,
        description="Size the engine deployment with lorafleet's adapter-aware autoscaler (a Ray Serve custom "
        "policy fed by the fleet controller's demand model); needs placement.enabled. Off: "
        "deployment.num_replicas engines, always. On: num_replicas is the initial count.",
    )
    settings: AutoscalingSettingsModel = Field(default_factory=AutoscalingSettingsModel, description="Knobs of the autoscaler.")
    step_costs: StepCostsModel = Field(
        default_factory=StepCostsModel,
        description="What one replica's decode step costs (seconds), to size the fleet from the demand: measure "
        "them for your GPU and model (python -m bench.engine_calibration). Defaults: the simulator's gpu_like model (an 8B model on an A100-class GPU, modelled, not measured).",
    )

    @model_validator(mode="after")
    def _check_settings(self) -> "AutoscalingConfig":
        self.autoscaling_settings()
        return self

    def autoscaling_settings(self) -> AutoscalingSettings:
        return AutoscalingSettings(**self.settings.model_dump())


class LorafleetConfig(_Strict):
    """The fleet: its base models (each with its own engine deployment) and the sections
    every base shares, which are also each base's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_either_model_or_models)

    models: tuple[ModelConfig, ...] = Field(
        description="The base models this fleet serves, each with its own engine deployment, router and placement. "
        "The first one's engine deployment is named EngineReplica, the others EngineReplica-<slug of served_name>. "
        "(A config with a single `model:` instead is read as a one-element `models:`.)",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine settings of every base (a base's `engine` overrides them).")
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig, description="Deployment settings of every base's engines, and the fleet-wide ingress.")
    adapters: AdapterStoreConfig
    server: ServerConfig = ServerConfig()
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="Request routing of every base (a base's `routing` overrides it).")
    placement: PlacementConfig = Field(default_factory=PlacementConfig, description="Placement of every base (a base's `placement` overrides it).")
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="Adapter-aware autoscaling of every base's engine deployment.")
    observability: ObservabilityConfig = ObservabilityConfig()

    @model_validator(mode="before")
    @classmethod
    def _single_model_form(cls, data: object) -> object:
        """Today's single `model:` is a one-element `models:`."""
        if isinstance(data, dict) and "model" in data:
            if "models" in data:
                raise ValueError("give either `model:` (one base) or `models:` (a list of bases), not both")
            data = {**{k: v for k, v in data.items() if k != "model"}, "models": [data["model"]]}
        return data

    @model_validator(mode="after")
    def _check_bases(self) -> "LorafleetConfig":
        if not self.models:
            _fail(("models",), "list at least one base model")
        names: dict[str, int] = {}
        slugs: dict[str, str] = {}
        for i, m in enumerate(self.models):
            for name in dict.fromkeys((m.served_name, *m.aliases)):
                if name in names and names[name] != i:
                    _fail(("models", i), f"{name!r} names two bases ({self.models[names[name]].served_name!r} and "
                                     f"{m.served_name!r}); served names and aliases must be unique in the fleet, so an "
                                     "adapter's base_model_name_or_path means one base")
                names[name] = i
            s = slug(m.served_name)
            if not s:
                _fail(("models", i, "served_name"), f"served name {m.served_name!r} needs a letter or digit")
            if s in slugs:
                _fail(("models", i, "served_name"), f"served names {slugs[s]!r} and {m.served_name!r} give the same deployment name "
                                 f"suffix {s!r}; rename one")
            slugs[s] = m.served_name
        for i in range(len(self.models)):
            self._base_view(i)  # each base's merged sections pass their own checks
        return self

    @model_validator(mode="after")
    def _check_autoscaling(self) -> "LorafleetConfig":
        if not self.autoscaling.enabled:
            return self
        s = self.autoscaling.settings
        for name, view in self.bases().items():
            where = f" (base {name})" if len(self.models) > 1 else ""
            if not view.placement.enabled:
                raise ValueError("autoscaling.enabled needs placement.enabled: the autoscaler sizes the fleet from "
                                 f"the placement controller's per-adapter demand{where}")
            if not s.min_replicas <= view.deployment.num_replicas <= s.max_replicas:
                raise ValueError(f"deployment.num_replicas ({view.deployment.num_replicas}) is the initial count: it must "
                                 f"be within autoscaling.settings min_replicas..max_replicas ({s.min_replicas}..{s.max_replicas}){where}")
        return self

    def replica_profile(self) -> ReplicaProfile:
        """One engine replica as the autoscaler sizes it (on a base's view, `for_base`):
        the engine's batch and slots, the configured step costs."""
        e = self.engine
        return ReplicaProfile(max_num_seqs=e.max_num_seqs, gpu_slots=e.max_loras, cpu_slots=e.max_cpu_loras,
                              **self.autoscaling.step_costs.model_dump())

    def max_engine_replicas(self) -> int:
        """The most engine replicas a base can have (on a base's view; sizes the ingress's hard cap)."""
        return self.autoscaling.settings.max_replicas if self.autoscaling.enabled else self.deployment.num_replicas

    # ------------------------------------------------------------------ bases

    @property
    def served_names(self) -> tuple[str, ...]:
        return tuple(m.served_name for m in self.models)

    @property
    def model(self) -> ModelConfig:
        """The base of a one-base config (a base's own view, `for_base`, always is one)."""
        if len(self.models) != 1:
            raise ConfigError(f"this config serves {len(self.models)} base models ({', '.join(self.served_names)}): "
                              "use for_base(served_name) / bases()")
        return self.models[0]

    def for_base(self, served_name: str) -> "LorafleetConfig":
        """One base's view of the fleet: a one-base config whose engine, deployment, routing
        and placement are the base's overrides merged over the fleet's. What its engine
        replicas, router and placement run with."""
        for i, m in enumerate(self.models):
            if m.served_name == served_name:
                return self._base_view(i)
        raise KeyError(served_name)

    def bases(self) -> dict[str, "LorafleetConfig"]:
        """served name -> the base's view (`for_base`), in config order."""
        return {m.served_name: self._base_view(i) for i, m in enumerate(self.models)}

    def engine_deployment_name(self, served_name: str) -> str:
        """`EngineReplica` for the first base (what dashboards, alerts and Helm overrides
        already name), `EngineReplica-<slug>` for the others."""
        if served_name == self.models[0].served_name:
            return ENGINE_DEPLOYMENT
        if served_name not in self.served_names:
            raise KeyError(served_name)
        return f"{ENGINE_DEPLOYMENT}-{slug(served_name)}"

    def _base_view(self, index: int) -> "LorafleetConfig":
        m = self.models[index]
        if len(self.models) == 1 and all(getattr(m, s) is None for s in PER_BASE_SECTIONS):
            view = self
        else:
            view = self._merged_view(index)
        problem = _parallelism_problem(view.engine, view.deployment)
        if problem:
            loc = ("models", index, "deployment", "replica_gpus") if m.deployment and "replica_gpus" in m.deployment.model_fields_set \
                else ("deployment", "replica_gpus")
            _fail(loc, problem + (f" (base {m.served_name})" if len(self.models) > 1 else ""))
        return view

    def _merged_view(self, index: int) -> "LorafleetConfig":
        m = self.models[index]
        update: dict[str, Any] = {"models": (m.source_only(),)}
        line_errors = []
        for section in PER_BASE_SECTIONS:
            override = getattr(m, section)
            fleet = getattr(self, section)
            if override is None:
                update[section] = fleet
                continue
            merged = _deep_merge(fleet.model_dump(), override.model_dump(exclude_unset=True))
            try:
                update[section] = type(fleet).model_validate(merged)
            except ValidationError as err:
                line_errors += [{**e, "loc": ("models", index, section, *e["loc"])} for e in err.errors(include_url=False)]
        if line_errors:
            raise ValidationError.from_exception_data(type(self).__name__, line_errors)
        return self.model_copy(update=update)

    # ------------------------------------------------------------------ one base (a view)

    def replica_max_ongoing_requests(self) -> int:
        """Ray Serve's per-replica limit: as configured, else the engine's batch size."""
        return self.deployment.max_ongoing_requests or self.engine.max_num_seqs

    def tensor_parallel_size(self) -> int:
        return self.engine.tensor_parallel_size or parallel_gpus(self.deployment) // self.engine.pipeline_parallel_size

    def batching_warnings(self) -> list[str]:
        """Settings that starve the engines' batching (printed at start)."""
        warnings = []
        for name, view in self.bases().items():
            configured = view.deployment.max_ongoing_requests
            if configured is not None and configured < view.engine.max_num_seqs:
                where = f" of base {name}" if len(self.models) > 1 else ""
                warnings.append(f"deployment.max_ongoing_requests{where} ({configured}) is below engine.max_num_seqs "
                                f"({view.engine.max_num_seqs}): Ray Serve will hold back requests the engine could batch "
                                "(leave it unset to follow max_num_seqs)")
        return warnings

    def with_local_source(self, path: str) -> "LorafleetConfig":
        """A one-base view reading its base from `path` (the node-local copy of an S3 or
        hub source); adapters naming the original source are still its adapters."""
        m = self.model
        if path == m.source:
            return self
        aliases = tuple(dict.fromkeys((*m.aliases, m.source)))
        return self.model_copy(update={"models": (m.model_copy(update={"source": path, "aliases": aliases}),)})

    def with_paths_resolved(self, base_dir: Path) -> "LorafleetConfig":
        """Resolve relative local paths against `base_dir` (the config file's folder)."""

        def resolve(value: str) -> str:
            if "://" in value or Path(value).is_absolute():
                return value
            candidate = (base_dir / value).resolve()
            # A bare hub id such as "meta-llama/Llama-3.1-8B" has no local folder.
            if value.startswith(".") or candidate.exists():
                return str(candidate)
            return value

        def local_file(value: str) -> str:
            return value if Path(value).is_absolute() else str((base_dir / value).resolve())

        server = self.server
        if server.auth.keys_file:
            server = server.model_copy(update={"auth": server.auth.model_copy(update={"keys_file": local_file(server.auth.keys_file)})})
        for name in ("ledger_path", "journal_dir"):
            if getattr(server.usage, name):
                usage = server.usage.model_copy(update={name: local_file(getattr(server.usage, name))})
                server = server.model_copy(update={"usage": usage})
        deployment = self.deployment
        if deployment.model_cache_dir:
            deployment = deployment.model_copy(update={"model_cache_dir": local_file(deployment.model_cache_dir)})
        return self.model_copy(
            update={
                "models": tuple(m.model_copy(update={"source": resolve(m.source)}) for m in self.models),
                "adapters": self.adapters.model_copy(update={"uri": resolve(self.adapters.uri)}),
                "deployment": deployment,
                "server": server,
            }
        )

    def with_overrides(
        self, *, host: str | None = None, port: int | None = None, metrics_port: int | None = None
    ) -> "LorafleetConfig":
        update = {k: v for k, v in (("host", host), ("port", port), ("metrics_port", metrics_port)) if v is not None}
        if not update:
            return self
        return self.model_validate({**self.model_dump(), "server": {**self.server.model_dump(), **update}})


def _fail(loc: tuple, message: str):
    """A validation error at `loc` (a field path), from a check that spans several fields."""
    raise ValidationError.from_exception_data(
        "LorafleetConfig", [{"type": "value_error", "loc": loc, "input": None, "ctx": {"error": ValueError(message)}}])


def parallel_gpus(deployment: DeploymentConfig) -> int:
    """GPUs one engine is split over: replica_gpus when it is above 1, else 1 (a whole GPU,
    a share of one, or none on CPU)."""
    return int(deployment.replica_gpus) if deployment.replica_gpus > 1 else 1


def _parallelism_problem(engine: EngineConfig, deployment: DeploymentConfig) -> str | None:
    gpus = deployment.replica_gpus
    tp, pp = engine.tensor_parallel_size, engine.pipeline_parallel_size
    if gpus > 1 and gpus != int(gpus):
        return f"replica_gpus {gpus:g} above 1 must be a whole number of GPUs (one engine over several whole GPUs)"
    if gpus > 1:
        tp = tp or (int(gpus) // pp)
        if tp * pp != int(gpus):
            return (f"replica_gpus {int(gpus)} must equal engine.tensor_parallel_size x engine.pipeline_parallel_size "
                    f"({tp} x {pp}): every GPU of the replica runs one rank of its engine")
        return None
    if (tp or 1) * pp > 1:
        return (f"tensor_parallel_size x pipeline_parallel_size ({tp or 1} x {pp}) needs that many GPUs: set "
                "deployment.replica_gpus to it")
    return None


class ConfigError(ValueError):
    """A configuration that cannot start; the message names each bad field path."""


def format_validation_error(err: ValidationError, *, single_model_form: bool = False) -> str:
    problems = field_problems(err)
    if single_model_form:  # name the fields as the file does: `model.x`, not `models.0.x`
        problems = [re.sub(r"^models\.0(?=[.:])", "model", p) for p in problems]
    return "invalid config:\n" + "\n".join(f"  {problem}" for problem in problems)


def parse_config(data: object, base_dir: Path | None = None) -> LorafleetConfig:
    try:
        config = LorafleetConfig.model_validate(data)
    except ValidationError as err:
        single = isinstance(data, dict) and "model" in data and "models" not in data
        raise ConfigError(format_validation_error(err, single_model_form=single)) from None
    return config.with_paths_resolved(base_dir) if base_dir else config


def load_config(path: str | Path) -> LorafleetConfig:
    path = Path(path)
    return parse_config(read_yaml(path, ConfigError, "config file"), base_dir=path.resolve().parent)
