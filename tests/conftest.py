"""Contract tests: the same assertions against every framework service, over real HTTP.

Each service runs under gunicorn from its own virtualenv (.venvs/<name>), exactly
as `make run` starts it. A new framework service is tested by adding one line
to SERVICES.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from servekit.mnist import load_mnist
from servekit.testing import TEST_TOKEN, ServiceProcess

# Property tests draw the same examples on every run: CI is repeatable, and a failure can be rerun as it was.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.load_profile("repeatable")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's; Playwright never downloads one
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))

# service folder -> (the framework /health names, the models it serves)
SERVICES = {
    "keras": ("keras", ["keras-sequential", "keras-functional"]),
    "torch": ("torch", ["torch", "keras-torch"]),
    "tf": ("tensorflow", ["tf-native", "tf-hybrid"]),
    "jax": ("jax", ["flax", "keras-jax"]),
}


def start_service(name: str, model_dir: Path, **extra_env: str) -> ServiceProcess:
    """Start services/<name> under gunicorn on a free loopback port (ROLE=all unless ``extra_env`` says)."""
    env = {"MNIST_DIR": str(MNIST_DIR), "MODEL_REPOSITORY": str(model_dir), "INTRA_OP_THREADS": "2",
           "API_TOKEN": TEST_TOKEN, **extra_env}
    return ServiceProcess(ROOT / "services" / name, ROOT / ".venvs" / name, env).start()


def start_role(name: str, repository: Path, role: str, **extra_env: str) -> ServiceProcess:
    """A trainer or server of services/<name> over a shared repository, polling it quickly; logs beside it."""
    env = {"ROLE": role, "MODEL_POLL_S": "0.5", "CPU_LIMIT": "2", "INTRA_OP_THREADS": "", "API_TOKEN": TEST_TOKEN,
           **extra_env}
    process = ServiceProcess(ROOT / "services" / name, ROOT / ".venvs" / name,
                             {"MNIST_DIR": str(MNIST_DIR), "MODEL_REPOSITORY": str(repository), **env})
    process.log_path = repository.parent / f"{name}-{role}-{process.port}.log"
    return process.start()


@pytest.fixture(scope="session")
def mnist():
    return load_mnist(MNIST_DIR, mirrors=())


@pytest.fixture(scope="session")
def digits(mnist):
    """Twenty real MNIST test digits: (uint8 images, labels)."""
    return mnist.test.images[:20], mnist.test.labels[:20]



@pytest.fixture(scope="module", params=sorted(SERVICES))
def service(request, tmp_path_factory):
    """One running service per framework, shared by the tests of a module in file order."""
    name = request.param
    model_dir = tmp_path_factory.mktemp(f"models-{name}")
    process = start_service(name, model_dir)
    process.name, process.model_dir = name, model_dir
    process.framework, process.models = SERVICES[name]
    process.state = {}
    yield process
    process.stop()


def start_gateway(service_urls: dict[str, str], data_dir: Path, **extra_env: str) -> ServiceProcess:
    """Start the gateway under waitress (from the repository root, as `make run` does)."""
    env = {"SERVICE_URLS": ",".join(f"{n}={u}" for n, u in service_urls.items()), "GATEWAY_DATA_DIR": str(data_dir),
           "API_TOKEN": TEST_TOKEN, "SERVICE_TOKEN": TEST_TOKEN, **extra_env}
    return ServiceProcess(ROOT, ROOT / ".venvs" / "dev", env, module="gateway.serve").start()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Every service plus a gateway in front of them, fresh (untrained) for the module."""
    services = {name: start_service(name, tmp_path_factory.mktemp(f"stack-{name}")) for name in SERVICES}
    data_dir = tmp_path_factory.mktemp("gateway")
    gateway = start_gateway({name: s.url for name, s in services.items()}, data_dir)
    gateway.services, gateway.data_dir, gateway.state = services, data_dir, {}
    yield gateway
    gateway.stop()
    for service in services.values():
        service.stop()


@pytest.fixture(scope="session")
def all_models() -> list[str]:
    """Every model of every service, sorted."""
    return sorted(model for _, models in SERVICES.values() for model in models)


@pytest.fixture
def service_factory(tmp_path):
    """Start services/<name> (ROLE=all) with a fresh repository; stopped after the test."""
    started = []

    def start(name: str, **extra_env: str) -> ServiceProcess:
        started.append(start_service(name, tmp_path / f"models-{name}", **extra_env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def role_factory():
    """``start_role`` for tests of the trainer and server roles."""
    return start_role


@pytest.fixture(scope="session")
def gateway_factory():
    """``start_gateway`` for tests that need a gateway of their own."""
    return start_gateway


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()
