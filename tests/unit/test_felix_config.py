"""Felix configuration precedence: environment > file > node FelixConfiguration > default."""

from pathlib import Path

import pytest

from tortie.api import validate
from tortie.felix.config import ConfigError, ProtoPort, load


def felixconfig(name: str, spec: dict) -> object:
    return validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": name},
            "spec": spec,
        }
    ).spec  # type: ignore[attr-defined]


def test_defaults_and_hostname() -> None:
    cfg = load(environ={"NODENAME": "n1"}, config_file="/nonexistent")
    assert cfg.FelixHostname == "n1"
    assert cfg.IptablesMarkMask == 0xFFFF0000
    assert cfg.DefaultEndpointToHostAction == "Drop"
    assert ProtoPort("tcp", 22) in cfg.FailsafeInboundHostPorts
    assert cfg.sources["IptablesRefreshInterval"] == "default"


def test_precedence(tmp_path: Path) -> None:
    cfgfile = tmp_path / "felix.cfg"
    cfgfile.write_text("[global]\nIptablesRefreshInterval = 20\nRouteRefreshInterval = 21\n")
    global_spec = felixconfig(
        "default",
        {
            "iptablesRefreshInterval": "40s",
            "routeRefreshInterval": "41s",
            "ipsetsRefreshInterval": "42s",
            "healthPort": 9199,
        },
    )
    node_spec = felixconfig("node.n1", {"ipsetsRefreshInterval": "30s"})
    cfg = load(
        environ={"NODENAME": "n1", "FELIX_IPTABLESREFRESHINTERVAL": "10"},
        config_file=str(cfgfile),
        global_spec=global_spec,
        node_spec=node_spec,
    )
    assert cfg.IptablesRefreshInterval == 10.0
    assert cfg.RouteRefreshInterval == 21.0
    assert cfg.IpsetsRefreshInterval == 30.0
    assert cfg.HealthPort == 9199
    assert cfg.sources["IptablesRefreshInterval"] == "environment"
    assert cfg.sources["IpsetsRefreshInterval"] == "node FelixConfiguration"


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="DefaultEndpointToHostAction from the environment"):
        load(environ={"FELIX_DEFAULTENDPOINTTOHOSTACTION": "Maybe"}, config_file="/x")


def test_failsafe_port_syntax_and_restart_detection() -> None:
    a = load(
        environ={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22, udp:68,tcp:10.0.0.0/8:443"},
        config_file="/x",
    )
    assert a.FailsafeInboundHostPorts == (
        ProtoPort("tcp", 22),
        ProtoPort("udp", 68),
        ProtoPort("tcp", 443, "10.0.0.0/8"),
    )
    b = load(
        environ={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "none", "FELIX_LOGSEVERITYSCREEN": "Debug"},
        config_file="/x",
    )
    assert b.FailsafeInboundHostPorts == ()
    assert a.restart_needed(b) == ["FailsafeInboundHostPorts"]
