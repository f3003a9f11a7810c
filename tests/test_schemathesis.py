"""Schemathesis against each app's own /openapi.json: every service (ROLE=all) and the gateway, over HTTP.

Each app gets FUZZ_SECONDS of schemathesis' phases (examples, coverage, fuzzing, stateful) with a fixed
seed, as ``st run --max-time`` runs them, and every answer must pass not_a_server_error,
status_code_conformance, response_schema_conformance and strict_json (a JSON body has no NaN or Infinity).
The services' models are trained on a few images first, so that predictions, evaluations and readiness
answer from real models instead of all with 503.

POST /train (services and gateway) and POST /benchmark (gateway) are fuzzed with invalid bodies only, which
they must refuse (starts_no_work): a valid body starts minutes of training or load on a shared machine, and
every later one would only meet the 409 of the job still running. Their valid bodies are tested in
test_contract.py and test_gateway.py.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from servekit.testing import TEST_TOKEN, authorized, wait_for_job
from tests.conftest import SERVICES, start_gateway, start_service

FUZZ_SECONDS = 55
SEED = 13
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance", "strict_json",
          "starts_no_work")
NEGATIVE_ONLY = {("POST", "/train"), ("POST", "/benchmark")}  # fuzzed with invalid bodies only


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@schemathesis.check
def strict_json(ctx, response, case):
    """A JSON body parses with a parser that refuses NaN, Infinity and -Infinity."""
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            json.loads(response.content, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise AssertionError(f"the body is not strict JSON: {exc}") from None


@schemathesis.check
def starts_no_work(ctx, response, case):
    """An operation of NEGATIVE_ONLY refuses what it is sent (a success would have started a job)."""
    if (case.method.upper(), case.operation.path) in NEGATIVE_ONLY and response.status_code < 300:
        raise AssertionError(f"a body the schema refuses was accepted with {response.status_code}")


def fuzz_config() -> SchemathesisConfig:
    """schemathesis.toml's settings, as a dict: the checks, budget, seed, token and negative-only operations."""
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "max-time": FUZZ_SECONDS,
        "headers": {"Authorization": f"Bearer {TEST_TOKEN}"},
        "request-timeout": 60,
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "operations": [{"include-method": method, "include-path": path, "generation": {"mode": "negative"}}
                       for method, path in sorted(NEGATIVE_ONLY)],
    })


@dataclass
class Outcome:
    """What one fuzz run did: operations (of the schema, and tested), cases, check results, failures."""

    operations: set[str]
    tested: set[str] = field(default_factory=set)
    cases: int = 0
    checks: Counter = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, title) -> how to reproduce

    def summary(self) -> str:
        parts = [f"{len(self.operations & self.tested)}/{len(self.operations)} operations tested, {self.cases} cases"]
        for name in sorted({name for name, _ in self.checks}):
            passed, failed = self.checks[name, Status.SUCCESS], self.checks[name, Status.FAILURE]
            parts.append(f"{name} {passed} passed {failed} failed")
        return "; ".join(parts)


def run_schemathesis(url: str) -> Outcome:
    """Fuzz the app at ``url`` against its own /openapi.json."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=fuzz_config(), timeout=30)
    outcome = Outcome(operations={result.ok().label for result in schema.get_all_operations()})
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            outcome.tested.add(event.recorder.label)
            outcome.cases += len(event.recorder.cases)
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    outcome.checks[node.name, node.status] += 1
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        outcome.failures.setdefault((event.recorder.label, failure.title),
                                                    f"{failure.message}\n{node.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            outcome.failures[event.label, event.info.title] = str(event.info)
        elif isinstance(event, events.FatalError):
            outcome.failures["schemathesis", "fatal error"] = repr(event.exception)
    return outcome


def train_briefly(process) -> None:
    """Train every model of the service on a few images, so that it serves."""
    accepted = authorized().post(process.url + "/train", json={"epochs": 1, "train_limit": 256}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(process.url + accepted.json()["status_url"], timeout=300)
    assert job["status"] == "succeeded", job


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Every service, trained and serving."""
    started = {}
    try:
        for name in sorted(SERVICES):
            started[name] = start_service(name, tmp_path_factory.mktemp(f"fuzz-{name}"))
        for process in started.values():
            train_briefly(process)
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture(scope="module")
def gateway(services, tmp_path_factory):
    process = start_gateway({name: s.url for name, s in services.items()}, tmp_path_factory.mktemp("fuzz-gateway"))
    yield process
    process.stop()


@pytest.mark.parametrize("app", [*sorted(SERVICES), "gateway"])
def test_app_answers_as_its_openapi_document_says(app, request):
    process = request.getfixturevalue("gateway") if app == "gateway" else request.getfixturevalue("services")[app]
    outcome = run_schemathesis(process.url)
    print(f"\n{app}: {outcome.summary()}")
    assert requests.get(process.url + "/health", timeout=10).status_code == 200, process.log_tail()
    assert outcome.tested >= outcome.operations and outcome.cases > 100, outcome.summary()
    failures = [f"{operation}: {title}\n{how}" for (operation, title), how in outcome.failures.items()]
    assert not failures, "\n\n".join([*failures, f"server log: {process.log_path}"])


def test_the_custom_checks_can_fail():
    """strict_json refuses NaN; starts_no_work refuses an accepted training body."""
    train = SimpleNamespace(method="POST", operation=SimpleNamespace(path="/train"))
    nan = SimpleNamespace(headers={"content-type": ["application/json"]}, content=b'{"loss": NaN}', status_code=200)
    with pytest.raises(AssertionError, match="not strict JSON"):
        strict_json(None, nan, train)
    with pytest.raises(AssertionError, match="accepted with 202"):
        starts_no_work(None, SimpleNamespace(status_code=202), train)
