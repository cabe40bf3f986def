"""The chart's own values (everything but `lorafleet:`) as JSON Schema, written as code.

`sync_chart.py` writes the result into values.schema.json next to the lorafleet config's
schema (generated from deployments/config.py). Written here rather than by hand in JSON so
that:

- Kubernetes-typed values (securityContext, volumes, env, topology spread constraints,
  ...) are validated by KubeRay's own schema of the pod template they end up in
  (`shared/kuberay/rayservice.schema.json`, the RayService CRD), closed against unknown
  fields. The API server prunes unknown fields of a custom resource silently, so a typo
  such as `runAsNonroot` would otherwise leave a pod unhardened without a word.
- descriptions come from values.yaml's `# --` comments, so schema, values and README say
  the same thing;
- every object is closed (`additionalProperties: false`) unless it is a map by design.

Every section lists all its keys as required: values.yaml supplies them, so a `null`
override or a missing key in a replaced list item fails at install time.
"""

from __future__ import annotations

import copy
from typing import Any

QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
DURATION = r"^[0-9]+(ms|s|m|h)$"

Schema = dict[str, Any]


# ---- small constructors -------------------------------------------------------------------

def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object; every property is required unless named in `optional`."""
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": [k for k in properties if k not in optional]}


def string(*, pattern: str | None = None, enum: list[str] | None = None, min_length: int | None = None,
           max_length: int | None = None) -> Schema:
    out: Schema = {"type": "string"}
    if pattern:
        out["pattern"] = pattern
    if enum:
        out["enum"] = enum
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    return out


def integer(*, minimum: int | None = None, maximum: int | None = None) -> Schema:
    out: Schema = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def number(*, minimum: float | None = None, exclusive_minimum: float | None = None,
           maximum: float | None = None, exclusive_maximum: float | None = None) -> Schema:
    out: Schema = {"type": "number"}
    for key, value in (("minimum", minimum), ("exclusiveMinimum", exclusive_minimum),
                       ("maximum", maximum), ("exclusiveMaximum", exclusive_maximum)):
        if value is not None:
            out[key] = value
    return out


def boolean() -> Schema:
    return {"type": "boolean"}


def array(items: Schema, *, min_items: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if min_items is not None:
        out["minItems"] = min_items
    return out


def string_map() -> Schema:
    """Labels, annotations, node selectors: any keys, string values."""
    return {"type": "object", "additionalProperties": {"type": "string"}}


def ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def resources() -> Schema:
    """requests/limits of cpu, memory, ... (GPUs are set by the chart)."""
    quantities = {"type": "object", "additionalProperties": ref("quantity")}
    return obj({"requests": quantities, "limits": quantities}, optional=("requests", "limits"))


# ---- Kubernetes types, from KubeRay's RayService schema -----------------------------------

def closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that lists properties
    (kubectl's strict field validation, which the API server does not apply to values)."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items() if k != "default"}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


class KubeTypes:
    """Schemas of pod-template fields, cut out of the RayService CRD's head pod template."""

    def __init__(self, rayservice_schema: Schema):
        spec = rayservice_schema["properties"]["spec"]["properties"]
        self._pod = spec["rayClusterConfig"]["properties"]["headGroupSpec"]["properties"]["template"]["properties"]["spec"]["properties"]
        self._container = self._pod["containers"]["items"]["properties"]

    def pod(self, field: str) -> Schema:
        return closed(copy.deepcopy(self._pod[field]))

    def container(self, field: str) -> Schema:
        return closed(copy.deepcopy(self._container[field]))

    def label_selector(self) -> Schema:
        return self.pod("topologySpreadConstraints")["items"]["properties"]["labelSelector"]

    def topology_spread_constraints(self) -> Schema:
        """Like the pod's, but `labelSelector` may be left out: the chart fills in the pod's labels."""
        schema = self.pod("topologySpreadConstraints")
        schema["items"]["required"] = [k for k in schema["items"].get("required", []) if k != "labelSelector"]
        return schema

    def network_policy_peer(self) -> Schema:
        """networking.k8s.io/v1 NetworkPolicyPeer (not part of a pod template, written out)."""
        return obj({
            "podSelector": self.label_selector(),
            "namespaceSelector": self.label_selector(),
            "ipBlock": obj({"cidr": string(min_length=1), "except": array(string())}, optional=("except",)),
        }, optional=("podSelector", "namespaceSelector", "ipBlock"))


# ---- the values ------------------------------------------------------------------------------

def values_schema(k8s: KubeTypes) -> tuple[dict[str, Schema], list[str], dict[str, Schema]]:
    """(properties, required, $defs) of every top-level value but `lorafleet`."""
    pod_common = {
        "nodeSelector": string_map(),
        "tolerations": k8s.pod("tolerations"),
        "affinity": k8s.pod("affinity"),
        "podLabels": string_map(),
        "podAnnotations": string_map(),
        "topologySpreadConstraints": k8s.topology_spread_constraints(),
        "rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
    }
    worker_group = obj({
        "name": string(pattern=DNS_LABEL, max_length=63),
        "replicas": integer(minimum=0),
        "minReplicas": integer(minimum=0),
        "maxReplicas": integer(minimum=1),
        "gpus": integer(minimum=1),
        "resources": resources(),
        "shmSize": ref("quantityString"),
        **pod_common,
        "runtimeClassName": string(),
        "priorityClassName": string(),
        "models": array(string(min_length=1)),
    }, optional=("rayStartParams", "nodeSelector", "tolerations", "affinity", "podLabels", "podAnnotations",
                 "topologySpreadConstraints", "runtimeClassName", "priorityClassName", "models"))
    pvc_cache = obj({"enabled": boolean(), "existingClaim": string(), "storageClassName": string(),
                     "size": ref("quantityString")})
    properties: dict[str, Schema] = {
        "global": {"type": "object"},
        "nameOverride": string(),
        "fullnameOverride": string(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$", max_length=40),
        "image": obj({
            "repository": string(min_length=1),
            "tag": string(),
            "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"]),
        }),
        "imagePullSecrets": array(obj({"name": string(min_length=1)})),
        "serviceAccount": obj({
            "create": boolean(),
            "name": string(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", max_length=253),
            "annotations": string_map(),
            "automountToken": boolean(),
        }),
        "extraEnv": k8s.container("env"),
        "extraVolumes": k8s.pod("volumes"),
        "extraVolumeMounts": k8s.container("volumeMounts"),
        "podSecurityContext": k8s.pod("securityContext"),
        "securityContext": k8s.container("securityContext"),
        "scratchSizeLimit": ref("quantityString"),
        "runtimeClassName": string(),
        "priorityClassName": string(),
        "ray": obj({
            "version": string(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"),
            "authMode": string(enum=["token", "disabled"]),
        }),
        "upgradeStrategy": obj({
            "type": string(enum=["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]),
            "clusterUpgradeOptions": obj({
                "gatewayClassName": string(),
                "maxSurgePercent": integer(minimum=1, maximum=100),
                "stepSizePercent": integer(minimum=1, maximum=100),
                "intervalSeconds": integer(minimum=1),
            }),
        }),
        "rayClusterDeletionDelaySeconds": integer(minimum=0),
        "gcsFaultTolerance": obj({
            "enabled": boolean(),
            "redisAddress": string(pattern=r"^([^\s:/]+:[0-9]+)?$"),
            "redisPasswordSecret": string(),
            "redisPasswordKey": string(min_length=1),
        }),
        "drain": obj({"enabled": boolean(), "timeoutSeconds": integer(minimum=1)}),
        "podDisruptionBudget": obj({
            "enabled": boolean(),
            "headMaxUnavailable": integer(minimum=0),
            "workerMaxUnavailable": {"anyOf": [integer(minimum=0), string(pattern=r"^[0-9]+%$")]},
        }),
        "networkPolicy": obj({
            "enabled": boolean(),
            "apiFrom": array(k8s.network_policy_peer()),
            "metricsFrom": array(k8s.network_policy_peer()),
            "kuberayOperator": obj({"namespace": string(), "podLabels": string_map()}),
        }),
        "serve": obj({"excludeHeadPodFromServeSvc": boolean()}),
        "usageLedger": obj({
            "backend": string(enum=["sqlite", "postgres"]),
            "postgres": obj({
                "existingSecret": string(),
                "dsnKey": string(min_length=1),
                "dsnEnv": string(pattern=ENV_NAME),
                "bundled": obj({
                    "enabled": boolean(),
                    "image": string(min_length=1),
                    "storageSize": ref("quantityString"),
                    "storageClassName": string(),
                    "resources": resources(),
                }),
            }),
        }),
        "head": obj({"resources": resources(), **pod_common},
                    optional=tuple(pod_common)),
        "workerGroups": array(worker_group, min_items=1),
        "modelStorage": obj({
            "type": string(enum=["hub", "pvc", "s3"]),
            "hub": obj({"tokenSecret": obj({"name": string(), "key": string(min_length=1)})}),
            "pvc": obj({"claimName": string(), "mountPath": string(pattern="^/"), "subPath": string()}),
            "cache": obj({"enabled": boolean(), "sizeLimit": ref("quantityString"), "mountPath": string(pattern="^/"),
                          "persistence": pvc_cache}),
        }),
        "adapterStorage": obj({
            "type": string(enum=["pvc", "s3"]),
            "pvc": obj({"create": boolean(), "existingClaim": string(), "storageClassName": string(),
                        "size": ref("quantityString")}),
        }),
        "s3": obj({
            "existingSecret": string(),
            "accessKeyIdKey": string(min_length=1),
            "secretAccessKeyKey": string(min_length=1),
            "region": string(),
            "endpointUrl": string(pattern=r"^(https?://.+)?$"),
        }),
        "auth": obj({
            "enabled": boolean(),
            "existingSecret": string(),
            "keysFileKey": string(pattern=r"^[-._a-zA-Z0-9]+$"),
            "mountPath": string(pattern="^/"),
        }),
        "autoscaling": obj({
            "engineReplicas": obj({
                "enabled": boolean(),
                "minReplicas": integer(minimum=0),
                "maxReplicas": integer(minimum=1),
                "targetOngoingRequests": number(exclusive_minimum=0),
                "upscaleDelayS": number(minimum=0),
                "downscaleDelayS": number(minimum=0),
            }),
            "gpuWorkers": obj({
                "enabled": boolean(),
                "upscalingMode": string(enum=["Default", "Aggressive", "Conservative"]),
                "idleTimeoutSeconds": integer(minimum=0),
                "resources": resources(),
            }),
        }),
        "ingress": obj({
            "enabled": boolean(),
            "className": string(),
            "annotations": string_map(),
            "hosts": array(obj({
                "host": string(),
                "paths": array(obj({"path": string(pattern="^/"),
                                    "pathType": string(enum=["Prefix", "Exact", "ImplementationSpecific"])}),
                               min_items=1),
            })),
            "tls": array(obj({"secretName": string(), "hosts": array(string())}, optional=("secretName", "hosts"))),
        }),
        "monitoring": obj({
            "podMonitor": obj({"enabled": boolean(), "interval": string(pattern=DURATION), "labels": string_map()}),
            "prometheusRule": obj({
                "enabled": boolean(),
                "labels": string_map(),
                "alertLabels": string_map(),
                "replicasDownForMinutes": integer(minimum=1),
                "errorRatio": number(exclusive_minimum=0, exclusive_maximum=1),
                "ttftP99Seconds": number(exclusive_minimum=0),
                "adapterLoadFailures": integer(minimum=0),
                "gpuMemoryRatio": number(exclusive_minimum=0, maximum=1),
            }),
            "dashboards": obj({
                "enabled": boolean(),
                "label": string(min_length=1),
                "labelValue": string(),
                "folder": string(),
                "folderAnnotation": string(min_length=1),
                "namespace": string(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"),
            }),
        }),
        "tests": obj({
            "enabled": boolean(),
            "image": string(min_length=1),
            "model": string(),
            "prompt": string(min_length=1),
            "maxTokens": integer(minimum=1),
            "apiKeySecret": string(),
            "apiKeyKey": string(min_length=1),
        }),
    }
    required = [k for k in properties if k not in ("global", "nameOverride", "fullnameOverride")]
    defs = {
        "quantity": {"anyOf": [{"type": "string", "pattern": QUANTITY}, {"type": "number", "minimum": 0}]},
        "quantityString": {"type": "string", "pattern": QUANTITY, "description": "A Kubernetes quantity such as 16Gi."},
    }
    return properties, required, defs
