#!/usr/bin/env python3
"""Smoke test of the Docker Swarm stack (deploy/swarm/stack.yaml), for real, on this engine.

Initialises a single-node swarm when there is none (and leaves it at the end; a swarm that was already
there is left alone), builds the images (compose.yaml's: cached after the compose smoke test), deploys the
stack, checks that the gateway sees every framework server of the stack (four services, their models learnt
from the gateway), scales the torch servers to 2, trains a short run of every model through the gateway and
waits until every replica serves the new versions, sends 200 predictions
through the gateway while `docker service update --force` restarts the torch servers (0 errors allowed),
kills one torch server task and sees its replacement serve the promoted version, and removes the stack.
Exits non-zero on the first failed check.

    .venvs/dev/bin/python scripts/swarm_smoke.py      (make swarm-smoke)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.compose_smoke import (  # noqa: E402
    check_every_framework_deployed,
    every_replica_serves,
    replica_versions,
    roles,
    run_seconds,
    served_models,
    wait_until,
)
from servekit.mnist import load_mnist  # noqa: E402
from servekit.testing import free_port, png_bytes  # noqa: E402

STACK = "mnistcmp-smoke"
STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yaml"
ROLES = roles(STACK_FILE)
SERVICES = tuple(ROLES)  # keras-trainer, keras, torch-trainer, torch, ..., gateway
SERVERS = {name for name, role in ROLES.items() if role == "server"}
APP_UID = 10001  # the images' user, which must be able to write the model store
SECRETS = {f"{STACK}_api_token": secrets.token_urlsafe(16), f"{STACK}_service_token": secrets.token_urlsafe(16)}


def run(*command: str, env: dict | None = None, check: bool = True,
        capture: bool = False) -> subprocess.CompletedProcess:
    """Run a command from the repository root, echoing it."""
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=check, text=True, capture_output=capture)


def swarm_state() -> str:
    return run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}", capture=True).stdout.strip()


def running_tasks(service: str) -> list[str]:
    """Container ids of the service's running tasks on this node."""
    out = run("docker", "ps", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}",
              "--filter", "status=running", "--format", "{{.ID}}", capture=True).stdout
    return out.split()


def update_state(service: str) -> str:
    """The service's rolling-update state ("updating", "completed", ...), or "" when never updated."""
    return run("docker", "service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
               f"{STACK}_{service}", capture=True).stdout.strip()


def stack_ready(gateway: str, torch_replicas: int) -> bool:
    """Every service has its tasks running and the gateway sees every server replica up."""
    services = requests.get(f"{gateway}/services", timeout=10).json()["services"]
    up = {s["name"]: [r for r in s.get("replicas", []) if r.get("up")] for s in services}
    print("  replicas up:", {name: len(found) for name, found in up.items()}, flush=True)
    return all(s["up"] for s in services) and len(up.get("torch", [])) == torch_replicas


def main() -> int:
    mnist_dir = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")).resolve()
    created_swarm = False
    store = Path(tempfile.mkdtemp(prefix="mnistcmp-swarm-models-"))
    os.chown(store, APP_UID, APP_UID) if os.geteuid() == 0 else store.chmod(0o777)
    port = free_port()
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "MODEL_STORE": str(store), "GATEWAY_PORT": str(port),
           "API_TOKEN_SECRET": f"{STACK}_api_token", "SERVICE_TOKEN_SECRET": f"{STACK}_service_token",
           "SERVER_REPLICAS": "1", "MODEL_POLL_S": "1", "TORCH_INDEX_URL": os.environ.get("TORCH_INDEX_URL", "")}
    gateway = f"http://127.0.0.1:{port}"
    check_every_framework_deployed(STACK_FILE, SERVERS)
    started = time.monotonic()
    try:
        if swarm_state() != "active":
            run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
            created_swarm = True
        built = time.monotonic()
        run("docker", "compose", "build", env=env)  # the images the stack names (compose.yaml tags them)
        print(f"images built (or found in the build cache) in {time.monotonic() - built:.0f} s", flush=True)
        for name, value in SECRETS.items():
            subprocess.run(["docker", "secret", "create", name, "-"], input=value, text=True, check=True,
                           capture_output=True)
        run("docker", "stack", "deploy", "-c", "deploy/swarm/stack.yaml", "--resolve-image", "never", STACK, env=env)
        wait_until("the stack up and seen by the gateway", lambda: stack_ready(gateway, 1), timeout=600, interval=5)
        models = served_models(gateway, SERVERS)
        print(f"ok: stack deployed and healthy in {time.monotonic() - started:.0f} s: {len(SERVERS)} framework "
              f"services ({', '.join(sorted(SERVERS))}), {len(models)} models")

        run("docker", "service", "scale", "--detach", f"{STACK}_torch=2")
        wait_until("two torch replicas", lambda: stack_ready(gateway, 2), timeout=300, interval=3)
        print("ok: torch scaled to 2 replicas, both found by the gateway through tasks.torch")

        assert requests.post(f"{gateway}/train", json={}, timeout=30).status_code == 401
        run_id = requests.post(f"{gateway}/train", json={"epochs": 1, "train_limit": 2000}, timeout=30,
                               headers={"Authorization": f"Bearer {SECRETS[f'{STACK}_api_token']}"}).json()["run_id"]
        training = time.monotonic()
        print("ok: the gateway takes its token, and the services theirs, from Swarm secrets")
        result = wait_until("the training run to finish",
                            lambda: (r := requests.get(f"{gateway}/runs/{run_id}", timeout=10).json())["status"]
                            in ("succeeded", "failed") and r, timeout=900, interval=3)
        assert result["status"] == "succeeded", result
        versions = {name: entry["version"] for name, entry in result["models"].items()}
        assert sorted(versions) == models, f"trained {sorted(versions)}, the services have {models}"
        finished_at = time.monotonic()
        wait_until("every replica serving the new versions", lambda: every_replica_serves(gateway, versions),
                   timeout=120, interval=0.5)
        print(f"ok: trained {versions}; every replica serves them {time.monotonic() - finished_at:.1f} s later")
        print(f"  the run took {finished_at - training:.0f} s: {run_seconds(result)}", flush=True)

        image = png_bytes(load_mnist(mnist_dir, mirrors=()).test.images[0])
        before = set(replica_versions(gateway))
        outcomes: list[str] = []
        updating = threading.Event()
        updating.set()

        def predict_load() -> None:
            """At least 200 predictions, and on until the rolling update has finished."""
            session = requests.Session()
            while updating.is_set() or len(outcomes) < 200:
                try:
                    response = session.post(f"{gateway}/predict", files={"image": ("d.png", image, "image/png")},
                                            timeout=30)
                    torch = next(p for p in response.json()["predictions"] if p["model"] == "torch")
                    outcomes.append(torch.get("served_by") or f"error: {torch.get('error')}")
                except (requests.RequestException, ValueError, StopIteration) as exc:
                    outcomes.append(f"error: {exc}")
                time.sleep(0.02)

        load = threading.Thread(target=predict_load)
        load.start()
        try:
            run("docker", "service", "update", "--force", "--detach", f"{STACK}_torch")
            wait_until("the rolling update of the torch servers", lambda: update_state("torch") == "completed",
                       timeout=300, interval=1)
        finally:
            updating.clear()
            load.join()
        errors = [o for o in outcomes if o.startswith("error")]
        assert not errors, f"{len(errors)} of {len(outcomes)} predictions failed during the update: {errors[:3]}"
        replicas_seen = set(outcomes)
        assert len(replicas_seen) > 2, f"no replacement replica answered during the update: {replicas_seen}"
        print(f"ok: {len(outcomes)} predictions, 0 errors, while `service update --force` replaced both torch "
              f"servers (answered by {len(replicas_seen)} replicas; before: {len(before)} addresses)")
        wait_until("the update to finish with two torch replicas", lambda: stack_ready(gateway, 2), timeout=300,
                   interval=3)

        victim = running_tasks("torch")[0]
        run("docker", "kill", victim)
        wait_until("a replacement torch task", lambda: victim not in running_tasks("torch")
                   and len(running_tasks("torch")) == 2, timeout=300, interval=2)
        wait_until("both torch replicas serving the promoted version again",
                   lambda: stack_ready(gateway, 2)
                   and {v.get("torch") for v in replica_versions(gateway).values()} == {versions["torch"]},
                   timeout=300, interval=2)
        print("ok: a killed torch task came back serving the promoted version")
        print(f"swarm smoke test passed in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        run("docker", "stack", "rm", STACK, check=False)
        wait_until("the stack's containers gone", lambda: not any(running_tasks(s) for s in SERVICES), timeout=120)
        run("docker", "volume", "rm", f"{STACK}_gateway-data", check=False, capture=True)
        run("docker", "secret", "rm", *SECRETS, check=False, capture=True)
        if created_swarm:
            run("docker", "swarm", "leave", "--force", check=False)
        subprocess.run(["rm", "-rf", str(store)], check=False)


if __name__ == "__main__":
    sys.exit(main())
