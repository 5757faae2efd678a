"""Schemathesis against the service's own OpenAPI schema, on the real server: never a 5xx.

Every operation the schema documents is called with generated paths, parameters and bodies, with and
without credentials; whatever comes in, the answer is a client error or a success, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET, LiveServer, running_server

AUTHS = ({}, {"Authorization": f"Bearer {ADMIN_KEY}"}, {"Authorization": f"Bearer {WEBHOOK_SECRET}"})


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with running_server(tmp_path_factory.mktemp("schema")) as server:
        yield server


@pytest.mark.slow(seconds=8)
def test_no_generated_request_gets_a_server_error(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # The personalize webhook is a bare ASGI route, outside the schema; test_app_fuzz fuzzes it.
    assert {op.path for op in operations} >= {"/webhook/post-call", "/api/memory/{caller}", "/api/notes"}
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case) -> None:  # type: ignore[no-untyped-def]
            for auth in AUTHS:
                response = case.call(base_url=live.url, headers=auth)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
                seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

        call()
    assert len(seen) == len(operations), "every operation was exercised"
    assert any(200 in codes for codes in seen.values()), "some generated requests got through"
