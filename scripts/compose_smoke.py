#!/usr/bin/env python3
"""Smoke test of the containers: build and start the compose stack for real, use it, tear it down.

Builds every image (`docker compose build`), starts the stack (`docker compose up --scale torch=2`) under
its own project name, waits until all are healthy, checks that the gateway sees every framework server
compose.yaml defines (and learns their models from it), trains a tiny run through the gateway (on the
trainers), sees both torch replicas converge on the new version and both answer, predicts an uploaded PNG
(an answer from every model), restarts a server and sees it serve the promoted version again, checks that
no container runs as root, and removes everything, volumes included. Exits non-zero on the first failed
check.

    .venvs/dev/bin/python scripts/compose_smoke.py      (make compose-smoke)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servekit.mnist import load_mnist  # noqa: E402
from servekit.testing import free_port, png_bytes  # noqa: E402

PROJECT = "mnistcmp-smoke"
TOKEN = secrets.token_urlsafe(16)  # the gateway's API_TOKEN; the services' token is made by the `tokens` service
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TORCH_REPLICAS = 2


def roles(stack_file: Path) -> dict[str, str]:
    """Each long-running service of a compose or stack file -> its ROLE (server, trainer), "" for the gateway."""
    services = yaml.safe_load(stack_file.read_text())["services"]
    return {name: (service.get("environment") or {}).get("ROLE", "") for name, service in services.items()
            if service.get("restart") != "no"}  # not the one-shot `tokens`


ROLES = roles(ROOT / "compose.yaml")
SERVICES = tuple(ROLES)  # keras-trainer, keras, torch-trainer, torch, ..., gateway
SERVERS = {name for name, role in ROLES.items() if role == "server"}  # what the gateway's SERVICE_URLS name
FRAMEWORKS = {path.parent.name for path in (ROOT / "services").glob("*/app.py")}  # keras, torch, tf, jax


def check_every_framework_deployed(stack_file: Path, servers: set[str]) -> None:
    """Each framework service folder (services/<fw>/) has its server (and trainer) in the stack file."""
    assert servers == FRAMEWORKS, f"{stack_file.name} runs {sorted(servers)}, services/ has {sorted(FRAMEWORKS)}"
    missing = {f"{fw}-trainer" for fw in FRAMEWORKS} - set(roles(stack_file))
    assert not missing, f"{stack_file.name} has no {sorted(missing)}"


def compose(*args: str, env: dict, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run `docker compose -p PROJECT ...` in the repository root."""
    command = ["docker", "compose", "-p", PROJECT, *args]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, check=check, text=True,
                          capture_output=capture)


def wait_until(what: str, check, timeout: float, interval: float = 2.0):
    """Call ``check()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise SystemExit(f"FAILED: {what} within {timeout:.0f} s (last error: {last_error})")


def all_healthy(env: dict) -> bool:
    output = compose("ps", "--format", "json", env=env, capture=True).stdout.strip()
    # Compose prints one JSON object per line (newer) or one JSON array (older).
    rows = json.loads(output) if output.startswith("[") else [json.loads(line) for line in output.splitlines()]
    health = {row["Name"]: row.get("Health", "") for row in rows}
    print("  health:", health, flush=True)
    services = {row["Service"] for row in rows}
    torch_replicas = sum(row["Service"] == "torch" for row in rows)
    return (services == set(SERVICES) and torch_replicas == TORCH_REPLICAS
            and all(state == "healthy" for state in health.values()))


def replica_versions(gateway: str, service: str = "torch") -> dict:
    """Each replica's address -> the model versions it serves, as the gateway's /services shows."""
    services = requests.get(f"{gateway}/services", timeout=10).json()["services"]
    found = next(s for s in services if s["name"] == service)
    return {r["url"]: r.get("model_versions") for r in found["replicas"]}


def served_models(gateway: str, servers: set[str]) -> list[str]:
    """Every model the gateway's /services lists, once the gateway lists exactly ``servers``, each with models."""
    services = requests.get(f"{gateway}/services", timeout=10).json()["services"]
    names = {s["name"] for s in services}
    assert names == servers, f"the gateway's services {sorted(names)} are not the stack's servers {sorted(servers)}"
    assert all(s["models"] for s in services), [s["name"] for s in services if not s["models"]]
    return sorted(m["name"] for s in services for m in s["models"])


def every_replica_serves(gateway: str, versions: dict) -> bool:
    """True when every replica of every service serves the given model -> version."""
    for service in requests.get(f"{gateway}/services", timeout=10).json()["services"]:
        for served in replica_versions(gateway, service["name"]).values():
            if any(model in served and served[model] != version for model, version in versions.items()):
                return False
    return True


def run_seconds(run: dict) -> str:
    """Each model's time in a finished run (its trainer's job, start to result), for the log."""
    return ", ".join(f"{name} {entry['finished_at'] - entry['started_at']:.0f} s"
                     for name, entry in run["models"].items() if entry.get("started_at") and entry.get("finished_at"))


def every_answer(gateway: str, files: dict, models: list[str]) -> dict | None:
    """The gateway's answer when every model answered (a server's second worker may still be loading)."""
    answer = requests.post(f"{gateway}/predict", files=files, timeout=60).json()
    answered = sorted(p["model"] for p in answer["predictions"] if p.get("label") is not None)
    return answer if answered == models else None


def check_hardening(env: dict) -> None:
    """`docker inspect` of every container shows compose.yaml's hardening."""
    ids = compose("ps", "-q", env=env, capture=True).stdout.split()
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], check=True, capture_output=True,
                                          text=True).stdout)
    for container in inspected:
        name, host, config = container["Name"], container["HostConfig"], container["Config"]
        assert host["ReadonlyRootfs"], f"{name}: the root file system is writable"
        assert host["CapDrop"] == ["ALL"] or "ALL" in (host["CapDrop"] or []), f"{name}: capabilities kept"
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), f"{name}: no no-new-privileges"
        assert host["Memory"] > 0 and host["PidsLimit"] and host["NanoCpus"] > 0, f"{name}: unbounded resources"
        assert host["LogConfig"]["Config"].get("max-size"), f"{name}: logs are not rotated"
        assert config.get("StopTimeout", 10) >= 30, f"{name}: stop grace below gunicorn's graceful timeout"


def main() -> int:
    mnist_dir = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")).resolve()
    port = free_port()
    env = {
        **os.environ,
        "MNIST_DIR": str(mnist_dir),
        "MNIST_MOUNT_MODE": "ro",
        "TORCH_INDEX_URL": os.environ.get("TORCH_INDEX_URL", ""),
        "GATEWAY_PORT": str(port),
        "API_TOKEN": TOKEN,
    }
    gateway = f"http://127.0.0.1:{port}"
    check_every_framework_deployed(ROOT / "compose.yaml", SERVERS)
    started = time.monotonic()
    try:
        # Built first, then started: `up --build` builds an image once per service naming it (trainer and server),
        # and when the two builds differ (a file changed meanwhile) compose recreates containers while creating
        # others (`Conflict. The container name ... is already in use`).
        compose("build", env=env)
        print(f"images built (or found in the build cache) in {time.monotonic() - started:.0f} s", flush=True)
        compose("up", "--no-build", "--detach", "--scale", f"torch={TORCH_REPLICAS}", env=env)
        print(f"built and started in {time.monotonic() - started:.0f} s", flush=True)
        wait_until("every container healthy", lambda: all_healthy(env), timeout=600, interval=5)
        services = requests.get(f"{gateway}/services", timeout=10).json()["services"]
        assert all(s["up"] for s in services), services
        models = served_models(gateway, SERVERS)
        print(f"ok: all services healthy and reachable through the gateway: {len(SERVERS)} framework services "
              f"({', '.join(sorted(SERVERS))}), {len(models)} models")

        replicas = replica_versions(gateway)
        assert len(replicas) == TORCH_REPLICAS, replicas
        print(f"ok: the gateway found {TORCH_REPLICAS} torch replicas by DNS: {sorted(replicas)}")

        refused = requests.post(f"{gateway}/train", json={"epochs": 1}, timeout=30)
        assert refused.status_code == 401, refused.text
        print("ok: training without the token is refused (401)")
        run_id = requests.post(f"{gateway}/train", json={"epochs": 1, "train_limit": 3000}, headers=AUTH,
                               timeout=30).json()["run_id"]
        training = time.monotonic()
        run = wait_until("the training run to finish",
                         lambda: (r := requests.get(f"{gateway}/runs/{run_id}", timeout=10).json())["status"]
                         in ("succeeded", "failed") and r, timeout=900, interval=3)
        assert run["status"] == "succeeded", run
        versions = {name: entry.get("version") for name, entry in sorted(run["models"].items())}
        assert sorted(versions) == models, f"trained {sorted(versions)}, the services have {models}"
        print("ok: tiny training run succeeded on the trainers, versions", versions)
        print(f"  the run took {time.monotonic() - training:.0f} s: {run_seconds(run)}", flush=True)

        finished_at = time.monotonic()
        wait_until("every replica serving the new versions", lambda: every_replica_serves(gateway, versions),
                   timeout=120, interval=0.5)
        print(f"ok: every replica, both torch ones included, serves the new versions "
              f"{time.monotonic() - finished_at:.1f} s after the run ended")

        mnist = load_mnist(mnist_dir, mirrors=())
        files = {"image": ("seven.png", png_bytes(mnist.test.images[0]), "image/png")}
        served_by = set()
        for _ in range(12):
            answer = wait_until(f"{len(models)} answers", lambda: every_answer(gateway, files, models), timeout=60,
                                interval=0.5)
            served_by |= {p["served_by"] for p in answer["predictions"] if p["model"] == "torch"}
        labels = [p["label"] for p in answer["predictions"]]
        assert len(served_by) == TORCH_REPLICAS, served_by
        print(f"ok: {len(labels)} answers {labels}, consensus {answer['consensus']}; "
              f"torch answered by {sorted(served_by)}")

        compose("restart", "torch", env=env)
        wait_until("torch healthy again after its restart", lambda: all_healthy(env), timeout=300, interval=3)
        wait_until("the restarted torch replicas serving the promoted version",
                   lambda: {v.get("torch") for v in replica_versions(gateway).values()} == {versions["torch"]},
                   timeout=120)
        print("ok: torch servers restarted and serve the promoted version from the repository")

        for service in SERVICES:
            uid = compose("exec", "-T", service, "id", "-u", env=env, capture=True).stdout.strip()
            assert uid != "0", f"{service} runs as root"
        for replica in ("1", "2"):
            mounts = compose("exec", "-T", "--index", replica, "torch", "touch", "/models/x", env=env, check=False,
                             capture=True)
            assert mounts.returncode != 0, "a server can write to the model repository"
        print("ok: servers mount the model repository read-only")
        check_hardening(env)
        print("ok: every container: read-only root, no capabilities, no-new-privileges, memory, pids and log "
              "limits, a 30 s stop grace")
        print("ok: no container runs as root")
        print(f"compose smoke test passed in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        compose("down", "--volumes", "--remove-orphans", env=env, check=False)


if __name__ == "__main__":
    sys.exit(main())
