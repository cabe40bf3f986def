"""The Kubernetes "restricted" Pod Security Standard, as a checker of pod specs.

What the API server's PodSecurity admission (`pod-security.kubernetes.io/enforce:
restricted`) refuses, from https://kubernetes.io/docs/concepts/security/pod-security-standards/
(the baseline controls plus the restricted ones), for checking the chart's pod templates
offline. Returns the violations, so a test can show them all at once.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
ALLOWED_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def container_violations(container: dict[str, Any], pod_context: dict[str, Any], where: str) -> list[str]:
    """Violations of one container, given its pod's securityContext (`pod_context`)."""
    out = []
    ctx = container.get("securityContext") or {}
    if ctx.get("privileged"):
        out.append(f"{where}: privileged")
    if ctx.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation must be false")
    caps = ctx.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{where}: capabilities must drop ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        out.append(f"{where}: adds capabilities {caps['add']}")
    run_as_non_root = ctx.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if run_as_non_root is not True:
        out.append(f"{where}: runAsNonRoot must be true (pod or container)")
    if ctx.get("runAsUser", pod_context.get("runAsUser")) == 0:
        out.append(f"{where}: runAsUser 0")
    seccomp = (ctx.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (got {seccomp})")
    if ctx.get("procMount", "Default") != "Default":
        out.append(f"{where}: procMount {ctx['procMount']}")
    selinux = ctx.get("seLinuxOptions") or {}
    if selinux.get("type") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        out.append(f"{where}: seLinuxOptions {selinux}")
    apparmor = (ctx.get("appArmorProfile") or {}).get("type")
    if apparmor == "Unconfined":
        out.append(f"{where}: appArmorProfile Unconfined")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"{where}: hostPort {port['hostPort']}")
    return out


def pod_violations(spec: dict[str, Any], where: str, extra_containers: list[dict[str, Any]] = ()) -> list[str]:
    """Violations of a pod spec; `extra_containers` are containers something else injects
    (KubeRay's autoscaler sidecar), given as {name, securityContext}."""
    out = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{where}: {flag}")
    pod_context = spec.get("securityContext") or {}
    if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append(f"{where}: pod seccompProfile Unconfined")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"{where}: sysctl {sysctl['name']}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []), *extra_containers]
    for container in containers:
        out.extend(container_violations(container, pod_context, f"{where}/{container['name']}"))
    return out
