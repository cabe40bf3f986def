"""The autoscaling decision: a pure function of (snapshot, profile, settings, state).

    decision, state = decide(snapshot, profile, settings, state)

Each call that is due (every `settings.period_s`):

1. needs     -- replicas for compute, LoRA slots and host memory from the demand
                model (needs.py); the binding one is the fleet's need now.
2. forecast  -- the need one start-up ahead: a smoothed trend of the need
                (kept in the state) times (start-up + period + the demand
                estimate's lag). Only upward: a replica asked for now serves
                `startup_s` from now, so the fleet must be asked for early; a
                falling need waits for the scale-down delay instead.
3. queue     -- requests waiting for a replica beyond what the fleet starts
                within part of the SLO ask for one more replica per batch's
                worth, unless replicas already starting cover them: the demand
                model lags a sudden jump, the queue does not.
4. up        -- the target rises at once to the forecast or the queue's need.
5. down      -- the target falls only after the need (with a margin) has stayed
                below the fleet for `downscale_delay_s`, by at most
                `max_downscale_fraction` of the fleet per decision; starting
                replicas are cancelled first, then the replicas whose adapters
                re-home most cheaply are drained (drain.py).

State is explicit (AutoscalerState, a frozen dataclass with `to_dict`/`from_dict`)
so the live glue can keep it in Ray Serve's `policy_state`. A thin Ray Serve
custom policy calls it unchanged:

    def lorafleet_policy(ctx: AutoscalingContext) -> tuple[int, dict]:
        state = AutoscalerState.from_dict(ctx.policy_state.get("lorafleet", {}))
        snap = FleetSnapshot(now=ctx.current_time, replicas=<controller's latest
                    ReplicaStats>, starting=ctx.target_num_replicas -
                    ctx.current_num_replicas (if > 0), demand=<PlacementLoop.
                    estimator.rates()>, costs=<lora_cost of each manifest>,
                    fleet_queue=ctx.total_queued_requests, removable=<Ray's stop
                    order: newest first>)
        decision, state = decide(snap, profile, settings, state)
        return decision.target, {"lorafleet": state.to_dict()}

with the deployment's AutoscalingConfig upscale/downscale delays at 0 and factors
at 1, since this function applies its own (Ray wraps every custom policy in them).
Ray picks which replica stops (pending ones first, then the newest on the least
used node); pass that order as `removable` and the policy's drain choice becomes
the advance notice the placement controller needs to re-home that replica's
adapters before it goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from cluster.autoscaling.drain import DrainChoice, choose_drains
from cluster.autoscaling.needs import Needs, compute_needs
from cluster.autoscaling.settings import AutoscalingSettings, ReplicaProfile
from cluster.placement.demand import AdapterDemand
from cluster.stats import ReplicaStats

_NO_DEMAND = AdapterDemand(0.0, 0.0)


@dataclass(frozen=True)
class FleetSnapshot:
    """What the autoscaler sees at `now` (the caller's clock, seconds).

    replicas   -- the latest stats of every serving replica (draining ones flagged).
    starting   -- replicas asked for that do not serve yet.
    demand     -- per-adapter request and token rates (the placement controller's
                  DemandEstimator); `base` the same for base-model requests.
    costs      -- adapter -> relative LoRA step cost (`cluster.lora_cost`; 1.0 if
                  missing); `read_s` adapter -> store read seconds (the profile's
                  store_load_s if missing).
    prompt_tokens_per_request -- mean prompt length, for prefill work.
    fleet_queue -- requests waiting at the routers for any replica to take them.
    removable  -- replicas the platform lets the policy drain, in its order;
                  None: any serving replica.
    """

    now: float
    replicas: tuple[ReplicaStats, ...]
    demand: Mapping[str, AdapterDemand]
    starting: int = 0
    base: AdapterDemand = _NO_DEMAND
    costs: Mapping[str, float] = field(default_factory=dict)
    read_s: Mapping[str, float] = field(default_factory=dict)
    prompt_tokens_per_request: float = 0.0
    fleet_queue: int = 0
    removable: tuple[str, ...] | None = None

    def serving(self) -> list[ReplicaStats]:
        """Replicas taking new requests."""
        return [s for s in self.replicas if s.healthy and not s.draining]


@dataclass(frozen=True)
class AutoscalerState:
    """Everything the decision remembers between calls; JSON-able as a dict."""

    target: int = 0  # the last decision (0: none yet)
    decided_at: float | None = None
    too_large_since: float | None = None  # since when the need has stayed below the fleet
    need: float = 0.0  # the binding need at the last decision
    trend: float = 0.0  # smoothed d(need)/dt, replicas per second
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AutoscalerState:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScaleDecision:
    """target: replicas to have (serving + starting). drain: which serving replicas
    to drain, cheapest first, when the target is below the fleet (after starting
    ones are cancelled). reason: why, in words. needs: the sizing behind it."""

    target: int
    drain: tuple[DrainChoice, ...] = ()
    reason: str = ""
    needs: Needs | None = None
    forecast: float = 0.0
    queue_need: int = 0


def decide(
    snapshot: FleetSnapshot,
    profile: ReplicaProfile,
    settings: AutoscalingSettings,
    state: AutoscalerState | None = None,
) -> tuple[ScaleDecision, AutoscalerState]:
    state = state or AutoscalerState()
    now = snapshot.now
    serving = snapshot.serving()
    current = len(serving) + snapshot.starting
    if state.decided_at is not None and now - state.decided_at < settings.period_s and state.target:
        return ScaleDecision(state.target, reason=state.reason), state

    has_demand = bool(snapshot.demand) or snapshot.base.token_rate > 0
    needs = compute_needs(
        snapshot.demand,
        profile,
        settings,
        base=snapshot.base,
        costs=snapshot.costs,
        read_s=snapshot.read_s,
        prompt_tokens_per_request=snapshot.prompt_tokens_per_request,
    )
    need = needs.binding

    # 2. forecast
    trend = state.trend
    if state.decided_at is not None and now > state.decided_at and has_demand:
        dt = now - state.decided_at
        alpha = 1.0 - 0.5 ** (dt / settings.trend_half_life_s)
        trend += alpha * ((need - state.need) / dt - trend)
    horizon = settings.startup_s + settings.period_s + settings.demand_lag_s
    forecast = need + max(0.0, trend) * horizon

    # 3. queue
    queue_need = _queue_need(snapshot, serving, needs, profile, settings)

    floor, cap = settings.min_replicas, settings.max_replicas
    up = min(cap, max(floor, math.ceil(forecast - 1e-9), queue_need))
    down = min(cap, max(floor, math.ceil(forecast * (1.0 + settings.downscale_margin) - 1e-9), queue_need))
    too_large_since = state.too_large_since
    drains: tuple[DrainChoice, ...] = ()
    if not has_demand and not queue_need:
        target, too_large_since = max(floor, min(cap, current)), None
        reason = "no demand estimate yet: keep the fleet"
    elif up > current:
        target, too_large_since = up, None
        why = "the queue" if queue_need >= up and queue_need > math.ceil(forecast - 1e-9) else needs.reason()
        reason = f"scale up to {up}: {why} needs {max(forecast, queue_need):.1f} replicas (now {need:.1f}, trend {trend:+.3f}/s)"
    elif down < current:
        too_large_since = now if too_large_since is None else too_large_since
        waited = now - too_large_since
        if waited + 1e-9 >= settings.downscale_delay_s:
            step = max(1, math.floor(current * settings.max_downscale_fraction))
            target = max(down, current - step)
            cancelled = min(snapshot.starting, current - target)
            count = current - target - cancelled
            drains = tuple(
                choose_drains(
                    serving, count, snapshot.demand, read_s=snapshot.read_s,
                    default_read_s=profile.store_load_s, removable=snapshot.removable,
                )
            )
            reason = (
                f"scale down to {target}: {needs.reason()} needs {need:.1f} replicas "
                f"(x{1 + settings.downscale_margin:.2f} margin: {down}) for {waited:.0f} s"
            )
        else:
            target = current
            reason = f"hold {current}: need {need:.1f} below the fleet for {waited:.0f} of {settings.downscale_delay_s:.0f} s"
    else:
        target, too_large_since = current, None
        reason = f"hold {current}: {needs.reason()} needs {need:.1f}"
    target = min(cap, max(floor, target))
    new_state = replace(
        state, target=target, decided_at=now, too_large_since=too_large_since,
        need=need if has_demand else state.need, trend=trend, reason=reason,
    )
    return ScaleDecision(target, drains, reason, needs, forecast, queue_need), new_state


def _queue_need(
    snapshot: FleetSnapshot,
    serving: Sequence[ReplicaStats],
    needs: Needs,
    profile: ReplicaProfile,
    settings: AutoscalingSettings,
) -> int:
    """Replicas (serving + starting + extra) to start what waits within the SLO; 0
    when nothing waits beyond that. Waiting = at the routers + in replicas' queues
    (requests admitted to a replica that do not run yet)."""
    waiting = snapshot.fleet_queue + sum(s.queue_len for s in serving)
    if waiting <= 0 or not serving:
        return 0
    b = max(1.0, settings.target_batch_fraction * profile.max_num_seqs)
    request_s = needs.request_s if needs.request_s > 0 else 1.0
    starts_per_s = len(serving) * b / request_s  # each seat frees once per request
    allowance = starts_per_s * settings.queue_slo_fraction * settings.ttft_slo_s
    excess = waiting - allowance
    if excess <= 0:
        return 0
    extra = math.ceil(excess / b)
    return len(serving) + max(snapshot.starting, extra)
