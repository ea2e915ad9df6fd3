"""The API against its own OpenAPI schema, fuzzed: no 5xx, no undocumented status, no answer that breaks its schema.

Schemathesis's own engine (what ``schemathesis run`` does) reads ``/openapi.json`` from the app
in this process — no network — and sends every operation the coverage phase's boundary values
(each edge of each parameter, missing fields, wrong types) and a bounded number of generated
requests, as an authenticated administrator, on a fresh database. A fixed seed, Hypothesis's
derandomised mode and one worker make every run send the same requests, so a failure is real
and reproducible. Operations that would end the administrator's own access (users: demote,
deactivate, new password) are left out so the run keeps its token; every other one is fuzzed.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from schemathesis.engine import Status, events, from_schema

SEED = 20261205
EXAMPLES_PER_OPERATION = 8  # generated requests per operation, on top of the coverage phase's boundary values
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance", "content_type_conformance")
# Would lock the fuzzing administrator out: deactivation, demotion and a new password all revoke the token.
EXCLUDED = [("PATCH", "/api/v1/users/{user_id}")]


def _failures(finished: events.ScenarioFinished) -> list[str]:
    found = []
    for case_id, checks in finished.recorder.checks.items():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                case = finished.recorder.cases[case_id].value
                found.append(f"{finished.label} [{check.name}] {case.method} {case.formatted_path} "
                             f"query={case.query} body={str(case.body)[:200]}: {check.failure_info.failure}")
    return found


def test_every_operation_answers_within_its_schema(app: Any, client: TestClient,
                                                   admin_headers: dict[str, str]) -> None:
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "workers": 1,
        "headers": admin_headers,
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False},
                   "coverage": {"unexpected-methods": []}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    failures: list[str] = []
    errors: list[str] = []
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.label:
            tested.add(event.label)
            failures.extend(_failures(event))
            if event.status == Status.ERROR:
                errors.append(f"{event.label}: {event.skip_reason or 'error'}")
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert len(tested) >= 60, sorted(tested)
    assert not failures, "\n".join(sorted(set(failures)))
    assert not errors, "\n".join(errors)
