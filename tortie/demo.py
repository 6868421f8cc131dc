"""`make demo`: the main job, showing Tortie to a newcomer.

Today it starts a private etcd on loopback, applies every manifest in ``examples/`` with
tortiectl exactly as a user would, shows them back as tables and YAML, demonstrates a
rejected manifest, then stops etcd and removes its data. Later milestones grow it into a
multi-node lab with BGP, policy and real packets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tortie.lab.etcd import EtcdServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"


def _colour(enabled: bool) -> None:
    global BOLD, DIM, GREEN, RED, RESET
    if not enabled:
        BOLD = DIM = GREEN = RED = RESET = ""


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def tortiectl(env: dict[str, str], *args: str, stdin: str | None = None, expect: int = 0) -> str:
    exe = shutil.which("tortiectl", path=str(Path(sys.executable).parent))
    argv = [exe] if exe else [sys.executable, "-m", "tortie.ctl.main"]
    print(f"{DIM}$ tortiectl {' '.join(args)}{RESET}", flush=True)
    out = subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )
    text = out.stdout + out.stderr
    print(text.rstrip())
    if out.returncode != expect:
        raise SystemExit(
            f"{RED}demo failed: tortiectl {' '.join(args)} exited {out.returncode}{RESET}"
        )
    return text


BAD_POLICY = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: broken
spec:
  selector: role == 'db
  ingress:
  - action: Allow
    protocol: tcp
    destination:
      ports: [5432, "90:80"]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tortie demo")
    parser.add_argument("--no-colour", action="store_true")
    args = parser.parse_args(argv)
    _colour(sys.stdout.isatty() and not args.no_colour)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tortie-demo-") as work:
        step("Starting a private etcd on loopback (the datastore every component shares)")
        server = EtcdServer(Path(work) / "etcd", name="tortie-demo")
        with server:
            print(f"etcd is up at {server.endpoint}")
            env = dict(os.environ, ETCD_ENDPOINTS=server.endpoint)

            step("Applying Calico v3 manifests unchanged (examples/)")
            tortiectl(env, "apply", "-f", str(EXAMPLES))

            step("Reading them back: calicoctl-style tables")
            for kind, fmt in (
                ("ippools", "wide"),
                ("nodes", "wide"),
                ("gnp", "wide"),
                ("networkpolicy", "wide"),
                ("wep", "ps"),
                ("bgppeers", "ps"),
            ):
                extra = ["-A"] if kind in ("networkpolicy", "wep") else []
                tortiectl(env, "get", kind, "-o", fmt, *extra)

            step("One resource as YAML, with Calico's defaults filled in")
            tortiectl(env, "get", "ippool", "-o", "yaml")

            step("Changing things the way operators do")
            pool = tortiectl(env, "get", "ippools", "-o", "custom-columns=NAME").split()[1]
            tortiectl(env, "patch", "ippool", pool, "-p", '{"spec":{"natOutgoing":true}}')
            tortiectl(env, "label", "ippool", pool, "zone=eu-1")
            tortiectl(env, "get", "ippool", pool, "-o", "custom-columns=NAME,CIDR,NAT")

            step("A broken manifest is rejected with every problem named; nothing is written")
            tortiectl(env, "apply", "-f", "-", stdin=BAD_POLICY, expect=1)
            tortiectl(env, "get", "gnp", "broken", expect=1)

            step("Cleaning up")
            tortiectl(env, "delete", "-f", str(EXAMPLES))
        print(f"etcd stopped and its data removed ({server.endpoint})")
    print(f"\n{GREEN}{BOLD}Demo finished in {time.monotonic() - started:.1f} s{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
