# The GPU worker containers' preStop hook: drain this Ray node before Kubernetes stops it.
#
#   bash -c "<this file>" drain-ray-node <deadline seconds> [<proc dir>, default /proc]
#
# 1. Ask Ray's GCS to drain this node with a deadline (`ray drain-node`, the call Ray's
#    autoscaler makes before it removes a node). Ray Serve then starts the node's engine and
#    ingress replicas on other nodes and stops these gracefully: each finishes its in-flight
#    requests and streams, for up to graceful_shutdown_timeout_s (the chart sets the
#    deployments' to the same deadline). The node's HTTP proxy takes no new requests, drains
#    and stops, and KubeRay takes the pod out of the serve Service.
# 2. Wait until this container runs no Serve replica and no Serve proxy any more, or until
#    the deadline. Kubernetes sends SIGTERM only when this hook returns, so nothing that was
#    still streaming is cut before its deadline.
# Without a node id or an accepted drain (the head is gone, e.g. the whole old cluster of an
# upgrade is being deleted) there is nothing to wait for: return at once.
#
# Replicas and proxies are found by their process titles in /proc (the container's own PID
# namespace; tests pass a folder of fake `<pid>/cmdline` files instead). The patterns carry a
# bracket so that they never match this script's own command line or grep's; the literal
# titles must not appear anywhere in this file.
set -u
deadline_s="${1:?usage: drain-ray-node <deadline seconds> [<proc dir>]}"
proc="${2:-/proc}"
started=$SECONDS

node_id=$(timeout 30 python - 2>/dev/null <<'PY'
import ray

ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print(ray.get_runtime_context().get_node_id())
PY
)
if [ -z "$node_id" ]; then
  echo "drain-ray-node: no Ray node id (GCS unreachable?): nothing to drain" >&2
  exit 0
fi
if ! timeout 30 ray drain-node --address "${RAY_ADDRESS:-auto}" --node-id "$node_id" \
    --reason DRAIN_NODE_REASON_PREEMPTION --reason-message "pod ${HOSTNAME:-unknown} is terminating" \
    --deadline-remaining-seconds "$deadline_s"; then
  echo "drain-ray-node: the drain of node $node_id was not accepted: not waiting" >&2
  exit 0
fi
echo "drain-ray-node: draining node $node_id for up to ${deadline_s}s" >&2
while [ $((SECONDS - started)) -lt "$deadline_s" ] \
    && grep -qs -e 'ray::[S]erveReplica:' -e 'ray::[P]roxyActor' "$proc"/[0-9]*/cmdline; do
  sleep 1
done
echo "drain-ray-node: done after $((SECONDS - started))s" >&2
exit 0
