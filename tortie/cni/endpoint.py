"""Who a CNI invocation is for, and the datastore records the plugin keeps about it.

Identifiers (libcalico-go `names.WorkloadEndpointIdentifiers`, Calico's `GetIdentifiers`):
`K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS` make the orchestrator `k8s` (the pod is
the workload and the WorkloadEndpoint lives in the pod's namespace); otherwise it is `cni`
(the container ID is the workload, the namespace is `default`). The endpoint is `CNI_IFNAME`.
The IPAM handle is `<network>.<containerID>`. The host-side veth is `cali` + 11 hex chars of
sha1(`<namespace>.<pod>`) for a pod (`VethNameForWorkload`), `cali` + the first 11 chars of
the container ID otherwise, as Calico's plugin names them.

Records:
- the WorkloadEndpoint (`build_endpoint`), validated by `tortie.api` before anything is
  created (so bad labels fail the ADD with nothing to undo) and written with the datastore's
  compare-and-swap;
- the network's Profile, created once when no policy plugin is configured (`ensure_profile`):
  egress allowed, ingress from members of the same network (`has(<network>)`, the label the
  profile applies) or from anywhere under Kubernetes, exactly as Calico's plugin does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tortie.cni.spec import DATASTORE_ERROR, INVALID_CONFIG, CmdArgs, CNIError

__all__ = [
    "WorkloadIDs",
    "build_endpoint",
    "delete_endpoint",
    "delete_endpoint_named",
    "ensure_profile",
    "find_endpoint",
    "get_endpoint",
    "write_endpoint",
]

K8S = "k8s"
CNI = "cni"


def _escape(part: str) -> str:
    return part.replace("-", "--")


@dataclass(frozen=True)
class WorkloadIDs:
    orchestrator: str
    node: str
    namespace: str
    pod: str
    container_id: str
    endpoint: str
    network: str

    @classmethod
    def from_args(cls, args: CmdArgs, nodename: str, network: str) -> WorkloadIDs:
        cni_args = args.cni_args
        ns = cni_args.get("K8S_POD_NAMESPACE", "")
        pod = cni_args.get("K8S_POD_NAME", "")
        if ns and pod:
            return cls(K8S, nodename, ns, pod, args.container_id, args.ifname, network)
        namespace = cni_args.get("CNI_TEST_NAMESPACE", "") or "default"
        return cls(CNI, nodename, namespace, "", args.container_id, args.ifname, network)

    @property
    def workload(self) -> str:
        return self.pod if self.orchestrator == K8S else self.container_id

    @property
    def wep_prefix(self) -> str:
        """`<node>-<orchestrator>-<workload>-`: the names of this workload's endpoints."""
        return "-".join(_escape(p) for p in (self.node, self.orchestrator, self.workload)) + "-"

    @property
    def wep_name(self) -> str:
        return self.wep_prefix + _escape(self.endpoint)

    @property
    def handle_id(self) -> str:
        return f"{self.network}.{self.container_id}"

    @property
    def veth_name(self) -> str:
        if self.orchestrator == K8S:
            digest = hashlib.sha1(f"{self.namespace}.{self.pod}".encode()).hexdigest()
            return "cali" + digest[:11]
        return "cali" + self.container_id[:11]

    def matches(self, wep: Any) -> bool:
        """Whether an endpoint found by prefix is this workload's (any interface): libcalico-go's
        `NameMatches` with the endpoint left out."""
        spec = wep.spec
        if spec.node != self.node or spec.orchestrator != self.orchestrator:
            return False
        if self.orchestrator == K8S:
            return spec.pod == self.pod
        return spec.container_id == self.container_id


def _client(backend: Any) -> Any:
    from tortie.datastore.client import ResourceClient

    return ResourceClient(backend)


def build_endpoint(
    ids: WorkloadIDs,
    *,
    ip_networks: Sequence[str],
    interface_name: str,
    mac: str,
    profiles: Sequence[str],
    labels: Mapping[str, str],
) -> Any:
    """The WorkloadEndpoint for this workload, validated as tortiectl would (CNIError 7)."""
    from tortie.api import ValidationError, validate

    spec: dict[str, Any] = {
        "orchestrator": ids.orchestrator,
        "node": ids.node,
        "containerID": ids.container_id,
        "endpoint": ids.endpoint,
        "ipNetworks": list(ip_networks),
        "profiles": list(profiles),
        "interfaceName": interface_name,
        "mac": mac,
    }
    if ids.orchestrator == K8S:
        spec["pod"] = ids.pod
    meta: dict[str, Any] = {"name": ids.wep_name, "namespace": ids.namespace}
    if labels:
        meta["labels"] = dict(labels)
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": meta,
        "spec": spec,
    }
    try:
        return validate(doc)
    except ValidationError as exc:
        raise CNIError(INVALID_CONFIG, "invalid WorkloadEndpoint for this container",
                       str(exc)) from None


def get_endpoint(backend: Any, namespace: str, name: str) -> Any | None:
    from tortie.datastore.client import ResourceNotFound

    try:
        return _client(backend).get("WorkloadEndpoint", name, namespace)
    except ResourceNotFound:
        return None


def find_endpoint(backend: Any, ids: WorkloadIDs) -> Any | None:
    """An existing endpoint of this workload, whatever its interface (Calico lists by name
    prefix and matches the identifiers, so that `mypod` does not pick up `mypod-1`)."""
    from tortie.api import lookup
    from tortie.datastore import keys
    from tortie.datastore.client import ResourceDataError

    info = lookup("WorkloadEndpoint")
    assert info is not None
    prefix = keys.resource_key("WorkloadEndpoint", ids.wep_prefix, ids.namespace)
    kvs, _ = backend.list(prefix)
    client = _client(backend)
    for kv in kvs:
        try:
            wep = client.decode(info, kv)
        except ResourceDataError:
            continue
        if ids.matches(wep):
            return wep
    return None


def write_endpoint(backend: Any, wep: Any, existing: Any | None) -> Any:
    """Create the endpoint, or replace `existing` (compare-and-swap on its revision)."""
    from tortie.datastore.client import ResourceError

    client = _client(backend)
    try:
        if existing is None:
            return client.create(wep)
        wep.metadata.resource_version = existing.metadata.resource_version
        return client.update(wep)
    except ResourceError as exc:
        raise CNIError(DATASTORE_ERROR, "error writing the WorkloadEndpoint", str(exc)) from None


def delete_endpoint(backend: Any, wep: Any) -> bool:
    """Delete `wep` if it is still the revision we read; False if it changed or is gone."""
    from tortie.datastore import keys
    from tortie.datastore.backend import KeyNotFound, RevisionConflict

    key = keys.resource_key("WorkloadEndpoint", wep.name, wep.namespace)
    try:
        backend.delete(key, int(wep.metadata.resource_version or 0) or None)
    except (KeyNotFound, RevisionConflict):
        return False
    return True


def delete_endpoint_named(backend: Any, namespace: str, name: str) -> bool:
    """Delete the endpoint called `name` whatever its revision; False if there is none."""
    from tortie.datastore import keys

    return backend.delete(keys.resource_key("WorkloadEndpoint", name, namespace)) is not None


def ensure_profile(backend: Any, network: str, orchestrator: str) -> None:
    """Create the network's Profile if it does not exist (the plugin never updates one)."""
    from tortie.api import validate
    from tortie.datastore.client import ResourceError, ResourceExists, ResourceNotFound

    client = _client(backend)
    try:
        client.get("Profile", network)
        return
    except ResourceNotFound:
        pass
    if orchestrator == K8S:
        ingress: list[dict[str, Any]] = [{"action": "Allow"}]
    else:
        ingress = [{"action": "Allow", "source": {"selector": f"has({network})"}}]
    profile = validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Profile",
            "metadata": {"name": network},
            "spec": {
                "ingress": ingress,
                "egress": [{"action": "Allow"}],
                "labelsToApply": {network: ""},
            },
        }
    )
    try:
        client.create(profile)
    except ResourceExists:
        pass  # another ADD made it first
    except ResourceError as exc:
        raise CNIError(DATASTORE_ERROR, f"error creating profile {network}", str(exc)) from None
