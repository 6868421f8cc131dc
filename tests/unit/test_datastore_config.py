"""CalicoAPIConfig loading: calicoctl's file format, environment names and precedence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tortie.datastore.config import (
    DEFAULT_ENDPOINT,
    CalicoAPIConfig,
    ConfigError,
    config_from_env,
    config_from_text,
    load_config,
)

GOOD = """\
apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata: {}
spec:
  datastoreType: etcdv3
  etcdEndpoints: https://10.0.0.1:2379, https://etcd2
  etcdUsername: calico
  etcdPassword: secret
  etcdKeyFile: /etc/tortie/key.pem
  etcdCertFile: /etc/tortie/cert.pem
  etcdCACertFile: /etc/tortie/ca.pem
"""


def test_file_with_every_field() -> None:
    cfg = config_from_text(GOOD, "cfg.yaml")
    assert cfg.etcd_endpoints == ("https://10.0.0.1:2379", "https://etcd2:2379")
    assert (cfg.etcd_username, cfg.etcd_password) == ("calico", "secret")
    assert cfg.etcd_key_file == "/etc/tortie/key.pem"
    assert cfg.etcd_cert_file == "/etc/tortie/cert.pem"
    assert cfg.etcd_ca_cert_file == "/etc/tortie/ca.pem"
    assert cfg.source == "cfg.yaml"
    assert cfg.uses_tls
    assert "secret" not in repr(cfg)


def test_json_file_and_inline_pem() -> None:
    text = (
        '{"apiVersion": "projectcalico.org/v3", "kind": "CalicoAPIConfig", "spec": '
        '{"etcdEndpoints": "https://127.0.0.1:2379", "etcdCACert": "-----BEGIN...", '
        '"etcdCert": "C", "etcdKey": "K"}}'
    )
    cfg = config_from_text(text)
    assert (cfg.etcd_ca_cert, cfg.etcd_cert, cfg.etcd_key) == ("-----BEGIN...", "C", "K")
    assert cfg.datastore_type == "etcdv3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: calicoApiConfig\nspec: {}\n", "unknown apiVersion 'v1'"),
        ("apiVersion: projectcalico.org/v3\nkind: Other\n", "expected kind 'CalicoAPIConfig'"),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec: {etcdEndpoint: x}\n",
            "unknown field spec.etcdEndpoint",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  datastoreType: kubernetes\n",
            "datastoreType 'kubernetes' (in t.yaml) is not supported",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec: {kubeconfig: /x}\n",
            "Kubernetes datastore is not supported",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  etcdEndpoints: 127.0.0.1:2379\n",
            "invalid etcd endpoint '127.0.0.1:2379'",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  etcdEndpoints: http://a:2379,https://b:2379\n",
            "mix http and https",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  etcdEndpoints: http://a:2379\n  etcdCACertFile: /ca.pem\n",
            "use https:// endpoints",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  etcdEndpoints: https://a:2379\n  etcdCertFile: /c.pem\n",
            "needs both a certificate and a key",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
            "  etcdEndpoints: https://a:2379\n  etcdCACertFile: /ca.pem\n  etcdCACert: PEM\n",
            "both etcdCACertFile and inline etcdCACert",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec: {etcdPassword: p}\n",
            "etcdPassword is set without etcdUsername",
        ),
        ("apiVersion: [\n", "cannot parse t.yaml"),
        ("- a\n- b\n", "must hold a CalicoAPIConfig document"),
        (
            "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec: {}\nextra: 1\n",
            "unknown top-level field(s) in t.yaml: extra",
        ),
    ],
)
def test_invalid_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_text(text, "t.yaml")
    assert message in str(e.value)


def test_environment_names_and_calico_prefix() -> None:
    cfg = config_from_env(
        {
            "ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "ETCD_USERNAME": "u",
            "ETCD_PASSWORD": "p",
            "CALICO_ETCD_USERNAME": "wins",
            "DATASTORE_TYPE": "etcdv3",
        }
    )
    assert cfg.etcd_endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert cfg.etcd_username == "wins"
    assert cfg.source == "environment"
    tls = config_from_env(
        {
            "ETCD_ENDPOINTS": "https://e:2379",
            "ETCD_KEY_FILE": "k",
            "ETCD_CERT_FILE": "c",
            "ETCD_CA_CERT_FILE": "ca",
        }
    )
    assert (tls.etcd_key_file, tls.etcd_cert_file, tls.etcd_ca_cert_file) == ("k", "c", "ca")


def test_empty_environment_gives_defaults() -> None:
    cfg = config_from_env({})
    assert cfg.etcd_endpoints == (DEFAULT_ENDPOINT,)
    assert cfg.source == "defaults"


def test_legacy_authority_is_refused_with_a_pointer() -> None:
    with pytest.raises(ConfigError, match="set ETCD_ENDPOINTS instead"):
        config_from_env({"ETCD_AUTHORITY": "10.0.0.1:2379", "ETCD_SCHEME": "http"})
    # Harmless when ETCD_ENDPOINTS is set too.
    assert config_from_env(
        {"ETCD_AUTHORITY": "x:1", "ETCD_ENDPOINTS": "http://y:2379"}
    ).etcd_endpoints == ("http://y:2379",)


def _write(path: Path, endpoint: str) -> str:
    path.write_text(
        f"apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n"
        f"  etcdEndpoints: {endpoint}\n"
    )
    return str(path)


def test_precedence_explicit_file_then_default_file_then_env(tmp_path: Path) -> None:
    env = {"ETCD_ENDPOINTS": "http://from-env:2379"}
    explicit = _write(tmp_path / "explicit.cfg", "http://explicit:2379")
    default = _write(tmp_path / "default.cfg", "http://default:2379")
    missing = str(tmp_path / "missing.cfg")

    # An explicit file wins over everything; the environment does not fill it in.
    cfg = load_config(explicit, env=env, default_path=default)
    assert cfg.etcd_endpoints == ("http://explicit:2379",)
    # Without one, the default file is used when it exists (calicoctl behaves the same).
    assert load_config(None, env=env, default_path=default).etcd_endpoints == (
        "http://default:2379",
    )
    # Then the environment, then the defaults.
    assert load_config(None, env=env, default_path=missing).etcd_endpoints == (
        "http://from-env:2379",
    )
    assert load_config(None, env={}, default_path=missing).etcd_endpoints == (DEFAULT_ENDPOINT,)
    # An explicit file that does not exist is an error, not a silent fallback.
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(missing, env=env, default_path=default)


def test_for_endpoints_normalises() -> None:
    cfg = CalicoAPIConfig.for_endpoints("http://[::1]:2379, http://localhost")
    assert cfg.etcd_endpoints == ("http://[::1]:2379", "http://localhost:2379")


def test_importing_the_datastore_does_not_import_yaml_or_http() -> None:
    code = (
        "import sys, tortie.datastore, tortie.datastore.config, tortie.datastore.keys, "
        "tortie.datastore.memory, tortie.datastore.syncer\n"
        "bad = [m for m in ('yaml', 'http.client', 'msgspec') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import tortie.datastore.etcd\n"
        "assert 'yaml' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
