"""The one configuration schema of a lorafleet deployment.

The CLI (`lorafleet serve --config`), the tests and the Helm chart's `serveConfigV2`
all go through `load_config` / `LorafleetConfig.model_validate`, so a value that is
wrong anywhere fails the same way everywhere: at start, naming the field path.

Models are frozen and `extra="forbid"` so that a typo in YAML (`max_lora=4`) is an
error instead of a silently ignored key.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)

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


class ModelConfig(_Strict):
    source: PathOrUri = Field(
        description="Base model: a local Hugging Face model directory, or a hub id / s3:// URI "
        "that vLLM can load. Relative paths are resolved against the config file's folder."
    )
    served_name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$",
        description="The `model` name clients use for the base model; adapters list it as `parent`.",
    )
    aliases: tuple[str, ...] = Field(
        default=(),
        description="Other names an adapter's `base_model_name_or_path` may carry and still be "
        "accepted as trained on this base (e.g. the hub id it was trained from).",
    )


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
    replica_gpus: float = Field(default=0.0, ge=0, description="Ray GPUs per engine replica (1 on a GPU cluster, 0 on CPU).")
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
        default="per_replica",
        description="CPU backend only: where each engine's OpenMP threads run. per_replica: replica k on this "
        "node gets its own cores (ceil(replica_cpus) of them, wrapping when the node has fewer), so engines stop "
        "sharing one core; auto: vLLM's own binding (every engine on a node picks the same cores); none: no binding.",
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
    model: ModelConfig
    engine: EngineConfig = EngineConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    adapters: AdapterStoreConfig
    server: ServerConfig = ServerConfig()
    routing: RoutingConfig = RoutingConfig()
    placement: PlacementConfig = PlacementConfig()
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()

    @model_validator(mode="after")
    def _check_autoscaling(self) -> "LorafleetConfig":
        if self.autoscaling.enabled:
            if not self.placement.enabled:
                raise ValueError("autoscaling.enabled needs placement.enabled: the autoscaler sizes the fleet from "
                                 "the placement controller's per-adapter demand")
            s = self.autoscaling.settings
            if not s.min_replicas <= self.deployment.num_replicas <= s.max_replicas:
                raise ValueError(f"deployment.num_replicas ({self.deployment.num_replicas}) is the initial count: it must "
                                 f"be within autoscaling.settings min_replicas..max_replicas ({s.min_replicas}..{s.max_replicas})")
        return self

    def replica_profile(self) -> ReplicaProfile:
        """One engine replica as the autoscaler sizes it: the engine's batch and slots,
        the configured step costs."""
        e = self.engine
        return ReplicaProfile(max_num_seqs=e.max_num_seqs, gpu_slots=e.max_loras, cpu_slots=e.max_cpu_loras,
                              **self.autoscaling.step_costs.model_dump())

    def max_engine_replicas(self) -> int:
        """The most engine replicas the fleet can have (sizes the ingress's hard cap)."""
        return self.autoscaling.settings.max_replicas if self.autoscaling.enabled else self.deployment.num_replicas

    def replica_max_ongoing_requests(self) -> int:
        """Ray Serve's per-replica limit: as configured, else the engine's batch size."""
        return self.deployment.max_ongoing_requests or self.engine.max_num_seqs

    def batching_warnings(self) -> list[str]:
        """Settings that starve the engine's batching (printed at start)."""
        configured = self.deployment.max_ongoing_requests
        if configured is not None and configured < self.engine.max_num_seqs:
            return [f"deployment.max_ongoing_requests ({configured}) is below engine.max_num_seqs "
                    f"({self.engine.max_num_seqs}): Ray Serve will hold back requests the engine could batch "
                    "(leave it unset to follow max_num_seqs)"]
        return []

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
        return self.model_copy(
            update={
                "model": self.model.model_copy(update={"source": resolve(self.model.source)}),
                "adapters": self.adapters.model_copy(update={"uri": resolve(self.adapters.uri)}),
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


class ConfigError(ValueError):
    """A configuration that cannot start; the message names each bad field path."""


def format_validation_error(err: ValidationError) -> str:
    return "invalid config:\n" + "\n".join(f"  {problem}" for problem in field_problems(err))


def parse_config(data: object, base_dir: Path | None = None) -> LorafleetConfig:
    try:
        config = LorafleetConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    return config.with_paths_resolved(base_dir) if base_dir else config


def load_config(path: str | Path) -> LorafleetConfig:
    path = Path(path)
    return parse_config(read_yaml(path, ConfigError, "config file"), base_dir=path.resolve().parent)
