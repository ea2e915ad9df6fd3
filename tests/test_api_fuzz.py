"""The API against its own OpenAPI schema, fuzzed: no 5xx, no undocumented status, no answer that breaks its schema.

Schemathesis's own engine (what ``schemathesis run`` does) reads ``/openapi.json`` from the app
in this process — no network — and sends every operation the coverage phase's boundary values
(each edge of each parameter, missing fields, wrong types) and a bounded number of generated
requests, as an authenticated administrator, on a fresh database. A fixed seed, Hypothesis's
derandomised mode and one worker make every run send the same requests, so a failure is real
and reproducible. Operations that would end the administrator's own access (users: demote,
deactivate, new password, logging out) are left out so the run keeps its token — checked at the end,
with the number of successful answers, so a run that lost its way cannot pass; every other one is fuzzed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from schemathesis.engine import Status, events, from_schema

SEED = 20261205
EXAMPLES_PER_OPERATION = 8  # generated requests per operation, on top of the coverage phase's boundary values
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance", "content_type_conformance")
# Would lock the fuzzing administrator out: deactivation, demotion and a new password revoke the token, and so
# does ending sessions.
EXCLUDED_PATHS = ("/api/v1/users/{user_id}", "/api/v1/users/{user_id}/password", "/api/v1/users/me/password")
EXCLUDED_PATH_WORDS = r"logout"


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
    schema = schema.exclude(path=list(EXCLUDED_PATHS)).exclude(path_regex=EXCLUDED_PATH_WORDS)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.label:
            tested.add(event.label)
            statuses.update(i.response.status_code for i in event.recorder.interactions.values() if i.response)
            failures.extend(_failures(event))
            if event.status == Status.ERROR:
                errors.append(f"{event.label}: {event.skip_reason or 'error'}")
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert len(tested) >= 60, sorted(tested)
    # The run stayed authenticated and reached the operations, not only their validation.
    assert client.get("/api/v1/users/me", headers=admin_headers).status_code == 200
    assert statuses[200] + statuses[201] + statuses[202] + statuses[204] > 500, statuses
    assert not failures, "\n".join(sorted(set(failures)))
    assert not errors, "\n".join(errors)
