"""Cluster-wide singletons: ClusterInformation and KubeControllersConfiguration.

Both exist once, named ``default`` (libcalico-go's ``clientv3/clusterinfo.go`` and
``clientv3/kubecontrollersconfig.go`` refuse any other name). ClusterInformation is written by
the cluster itself (calico/node at start-up); calicoctl only reads it.

KubeControllersConfiguration gets the defaults Calico's client fills in
(``validateAndFillDefaults``): ``prometheusMetricsPort`` 9094, the node controller's
``leakGracePeriod`` 15m, the LoadBalancer controller's ``assignIPs: AllServices`` and
``nodeSelector: all()`` on host endpoint templates. The other documented defaults (log level
Info, health checks Enabled, etcd compaction every 10m, reconciler periods of 5m) apply where
the configuration is used and are listed in ``KUBE_CONTROLLERS_DEFAULTS``.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource, join
from tortie.api.kinds.common import (
    ENABLED_DISABLED,
    check_cidr_or_ip,
    check_name_ref,
    check_port,
    check_regexp,
    check_singleton_name,
)
from tortie.api.registry import name_column, register, spec_column
from tortie.api.validators import check_duration, check_labels, check_one_of, check_selector

# --- ClusterInformation ------------------------------------------------------------------------


class ClusterInformationSpec(ApiStruct):
    cluster_guid: str | None = msgspec.field(default=None, name="clusterGUID")
    cluster_type: str | None = None
    calico_version: str | None = None
    datastore_ready: bool | None = None
    variant: str | None = None


@register(
    "clusterinformations",
    aliases=("clusterinformation", "clusterinfo", "clusterinfos"),
    columns=(
        name_column(),
        spec_column("CLUSTERGUID", "cluster_guid"),
        spec_column("CLUSTERTYPE", "cluster_type"),
        spec_column("CALICOVERSION", "calico_version"),
        spec_column("DATASTOREREADY", "datastore_ready"),
    ),
)
class ClusterInformation(Resource):
    """Facts about the cluster (its GUID, type, Calico version, whether the datastore is ready)."""

    KIND: ClassVar[str] = "ClusterInformation"
    spec: ClusterInformationSpec = msgspec.field(default_factory=ClusterInformationSpec)

    def check_name(self, ctx: Ctx) -> None:
        check_singleton_name(ctx, self)


# --- KubeControllersConfiguration --------------------------------------------------------------

KUBE_CONTROLLERS_LOG_LEVELS = ("None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic")
ASSIGN_IPS = ("AllServices", "RequestedServicesOnly")
DEFAULT_PROMETHEUS_METRICS_PORT = 9094
DEFAULT_LEAK_GRACE_PERIOD = "15m"
KUBE_CONTROLLERS_DEFAULTS: dict[str, object] = {
    "logSeverityScreen": "Info",
    "healthChecks": "Enabled",
    "etcdV3CompactionPeriod": "10m",
    "prometheusMetricsPort": DEFAULT_PROMETHEUS_METRICS_PORT,
    "controllers.*.reconcilerPeriod": "5m",
    "controllers.node.syncLabels": "Enabled",
    "controllers.node.leakGracePeriod": DEFAULT_LEAK_GRACE_PERIOD,
    "controllers.node.hostEndpoint.autoCreate": "Disabled",
    "controllers.loadBalancer.assignIPs": "AllServices",
    "controllers.policyMigration.enabled": "Enabled",
}


class _ReconcilingController(ApiStruct):
    reconciler_period: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_duration(ctx, join(path, "reconcilerPeriod"), self.reconciler_period)


class PolicyControllerConfig(_ReconcilingController):
    pass


class WorkloadEndpointControllerConfig(_ReconcilingController):
    pass


class ServiceAccountControllerConfig(_ReconcilingController):
    pass


class NamespaceControllerConfig(_ReconcilingController):
    pass


class HostEndpointTemplate(ApiStruct):
    """Creates host endpoints for the selected nodes' matching interfaces or addresses."""

    generate_name: str | None = None
    interface_cidrs: list[str] | None = msgspec.field(default=None, name="interfaceCIDRs")
    interface_pattern: str | None = None
    labels: dict[str, str] | None = None
    node_selector: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if not self.generate_name:
            ctx.error(join(path, "generateName"), "a template needs a generateName")
        elif len(self.generate_name) > 253:
            ctx.error(join(path, "generateName"), "generateName must be at most 253 characters")
        else:
            check_name_ref(ctx, join(path, "generateName"), self.generate_name, "generateName")
        if not self.interface_cidrs and not self.interface_pattern:
            ctx.error(
                join(path, "interfaceCIDRs"),
                "at least one of interfaceCIDRs and interfacePattern must be given",
            )
        for i, cidr in enumerate(self.interface_cidrs or []):
            check_cidr_or_ip(ctx, f"{join(path, 'interfaceCIDRs')}[{i}]", cidr)
        check_regexp(ctx, join(path, "interfacePattern"), self.interface_pattern)
        check_labels(ctx, join(path, "labels"), self.labels)
        check_selector(ctx, join(path, "nodeSelector"), self.node_selector)


class AutoHostEndpointConfig(ApiStruct):
    auto_create: str | None = None
    create_default_host_endpoint: str | None = None
    templates: list[HostEndpointTemplate] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, join(path, "autoCreate"), self.auto_create, ENABLED_DISABLED)
        check_one_of(
            ctx,
            join(path, "createDefaultHostEndpoint"),
            self.create_default_host_endpoint,
            ENABLED_DISABLED,
        )
        seen: set[str] = set()
        for i, template in enumerate(self.templates or []):
            name = template.generate_name
            if name and name in seen:
                ctx.error(
                    f"{join(path, 'templates')}[{i}].generateName",
                    f"template name {name!r} is used more than once; each must be unique",
                )
            if name:
                seen.add(name)


class NodeControllerConfig(_ReconcilingController):
    sync_labels: str | None = None
    host_endpoint: AutoHostEndpointConfig | None = None
    leak_grace_period: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        super().check(ctx, path)
        check_one_of(ctx, join(path, "syncLabels"), self.sync_labels, ENABLED_DISABLED)
        check_duration(ctx, join(path, "leakGracePeriod"), self.leak_grace_period)


class LoadBalancerControllerConfig(ApiStruct):
    assign_ips: str | None = msgspec.field(default=None, name="assignIPs")

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, join(path, "assignIPs"), self.assign_ips, ASSIGN_IPS)


class MigrationControllerConfig(ApiStruct):
    enabled: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, join(path, "enabled"), self.enabled, ENABLED_DISABLED)


class ControllersConfig(ApiStruct):
    """Each controller runs when its entry is present (kube-controllers' defaults otherwise)."""

    node: NodeControllerConfig | None = None
    policy: PolicyControllerConfig | None = None
    workload_endpoint: WorkloadEndpointControllerConfig | None = None
    service_account: ServiceAccountControllerConfig | None = None
    namespace: NamespaceControllerConfig | None = None
    load_balancer: LoadBalancerControllerConfig | None = None
    policy_migration: MigrationControllerConfig | None = None


class KubeControllersConfigurationSpec(ApiStruct):
    log_severity_screen: str | None = None
    health_checks: str | None = None
    etcd_v3_compaction_period: str | None = msgspec.field(
        default=None, name="etcdV3CompactionPeriod"
    )
    prometheus_metrics_port: int | None = None
    controllers: ControllersConfig | None = None
    debug_profile_port: int | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(
            ctx,
            join(path, "logSeverityScreen"),
            self.log_severity_screen,
            KUBE_CONTROLLERS_LOG_LEVELS,
        )
        check_one_of(ctx, join(path, "healthChecks"), self.health_checks, ENABLED_DISABLED)
        check_duration(ctx, join(path, "etcdV3CompactionPeriod"), self.etcd_v3_compaction_period)
        check_port(ctx, join(path, "prometheusMetricsPort"), self.prometheus_metrics_port, lo=0)
        check_port(ctx, join(path, "debugProfilePort"), self.debug_profile_port, lo=0)


class KubeControllersConfigurationStatus(ApiStruct):
    """What kube-controllers is running with (the spec merged with its environment)."""

    running_config: KubeControllersConfigurationSpec | None = None
    environment_vars: dict[str, str] | None = None


@register(
    "kubecontrollersconfigurations",
    aliases=(
        "kubecontrollersconfiguration",
        "kubecontrollersconfig",
        "kubecontrollersconfigs",
    ),
)
class KubeControllersConfiguration(Resource):
    """Configuration of calico-kube-controllers (tortie-kube-controllers); named ``default``."""

    KIND: ClassVar[str] = "KubeControllersConfiguration"
    spec: KubeControllersConfigurationSpec = msgspec.field(
        default_factory=KubeControllersConfigurationSpec
    )
    status: KubeControllersConfigurationStatus | None = None

    def apply_defaults(self) -> None:
        spec = self.spec
        if spec.controllers is None:
            spec.controllers = ControllersConfig()
        if spec.prometheus_metrics_port is None:
            spec.prometheus_metrics_port = DEFAULT_PROMETHEUS_METRICS_PORT
        node = spec.controllers.node
        if node is not None:
            if node.leak_grace_period is None:
                node.leak_grace_period = DEFAULT_LEAK_GRACE_PERIOD
            if node.host_endpoint is not None:
                for template in node.host_endpoint.templates or []:
                    if not template.node_selector:
                        template.node_selector = "all()"
        lb = spec.controllers.load_balancer
        if lb is not None and not lb.assign_ips:
            lb.assign_ips = "AllServices"

    def check_name(self, ctx: Ctx) -> None:
        check_singleton_name(ctx, self)
