"""What a set of networking.k8s.io/v1 NetworkPolicies lets through, evaluated offline.

The semantics of the API (as a CNI that enforces NetworkPolicy applies them), for ingress:
a pod selected by no policy with policyType Ingress accepts everything; a selected pod
accepts a connection when any rule of any selecting policy allows both its source and its
port. A rule without `from` allows every source, without `ports` every port. A `from`
entry with only `podSelector` means pods of the policy's namespace; with only
`namespaceSelector`, every pod of the matching namespaces; with both, the matching pods of
the matching namespaces; `ipBlock` matches source addresses (used here for clients outside
the cluster, which no pod or namespace selector matches).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    """A pod as a policy sees it: where it runs and its labels."""

    namespace: str
    labels: dict[str, str]
    ip: str = "10.0.0.10"
    ports: dict[str, int] = field(default_factory=dict)  # named container ports

    def __hash__(self) -> int:
        return hash((self.namespace, tuple(sorted(self.labels.items())), self.ip))


@dataclass(frozen=True)
class External:
    """A client outside the pod network (through a LoadBalancer or NodePort)."""

    ip: str


Source = Pod | External


def namespace_labels(namespace: str) -> dict[str, str]:
    """The label every namespace carries since Kubernetes 1.22."""
    return {"kubernetes.io/metadata.name": namespace}


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict[str, Any], source: Source, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(source.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not isinstance(source, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], namespace_labels(source.namespace)):
            return False
    elif source.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], source.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, target: Pod) -> bool:
    if not ports:
        return True
    for entry in ports:
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        end = entry.get("endPort", number)
        if number is not None and number <= port <= end and entry.get("protocol", "TCP") == "TCP":
            return True
    return False


def allows(policies: list[dict[str, Any]], source: Source, target: Pod, port: int) -> bool:
    """Whether a TCP connection from `source` to `target`:`port` is let through."""
    selecting = [
        p for p in policies
        if p["metadata"].get("namespace", target.namespace) == target.namespace
        and selector_matches(p["spec"]["podSelector"], target.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"].get("namespace", target.namespace)
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if not _port_matches(rule.get("ports"), port, target):
                continue
            if not peers or any(_peer_matches(peer, source, namespace) for peer in peers):
                return True
    return False
