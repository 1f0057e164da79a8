"""Fuzzing the local cloud from its own OpenAPI document, with schemathesis, on loopback.

Every operation `/openapi.json` lists (the hub's IoT Hub REST API, direct methods, the studio's
`/api/...` and Edge Impulse `/v1/api/...` routes) gets requests drawn from the document's schemas
(request bodies are the handlers' pydantic models): values that fit (positive) and values that do
not (negative), a bounded number per operation, derandomized so that a failure reproduces. Each
request carries the credential its operation's security names (the service SAS token for the hub,
the studio's management key), and each answer must be:

- no server error (`not_a_server_error`): a bad request is the client's fault, a 4xx naming it;
- of a status the document declares for the operation (`status_code_conformance`), with a content
  type it declares (`content_type_conformance`), a body that matches the declared schema
  (`response_schema_conformance`) and the declared headers (`response_headers_conformance`);
- and no traceback in the service log.

A local cloud of its own (the fuzzer creates devices, configurations and labels of every shape).
Bounded: `EXAMPLES` per operation and mode, a 30 s timeout per request, the module's timeout.
"""
from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from collections import Counter  # noqa: E402

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from mqtt_raw import own_cloud  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.timeout(600)

EXAMPLES = 5  # per operation and mode: 87 operations, about 870 requests, 40-60 s on the 2-core machine
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def fuzz_cloud(tmp_path_factory):
    with own_cloud(tmp_path_factory.mktemp("fuzz-ws")) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def api_schema(fuzz_cloud):
    """The document as a client reads it: fetched from the running service with a credential."""
    key = fuzz_cloud.credentials()["studio_api_key"]
    return schemathesis.openapi.from_url(f"{fuzz_cloud.url}/openapi.json", headers={"x-api-key": key}, timeout=30)


def studio_project(cloud: Any) -> int:
    import requests

    key = cloud.credentials()["studio_api_key"]
    got = requests.get(f"{cloud.url}/v1/api/projects", headers={"x-api-key": key}, timeout=30).json()
    return int(got["projects"][0]["id"])


def credentials(cloud: Any, operation: Any) -> dict[str, str]:
    """The header the operation's security scheme names (the document says which)."""
    names = {name for req in operation.definition.raw.get("security", []) for name in req}
    if "studioKey" in names:
        return {"x-api-key": cloud.credentials()["studio_api_key"]}
    return {"Authorization": cloud.service_token()}


def exercise(cloud: Any, operation: Any, mode: GenerationMode, fixed: dict[str, Any], seen: Counter) -> None:
    """`EXAMPLES` requests of `mode` to `operation`, each checked; hypothesis shrinks a failure to its smallest case."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    def run(case: Any) -> None:
        body = case.body if isinstance(case.body, dict) else None
        if body is not None and case.path.endswith("/methods") and isinstance(body.get("connectTimeoutInSeconds"), int):
            # waiting up to 300 s for a device that never connects is documented behaviour, not a finding: bound it
            body["connectTimeoutInSeconds"] = min(body["connectTimeoutInSeconds"], 1)
        # the credential the operation's security names; schemathesis fills those headers with drawn values otherwise
        case.headers = {**(case.headers or {}), **credentials(cloud, operation)}
        mark = cloud.log_mark()
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        seen[response.status_code] += 1
        errors = cloud.unexpected_since(mark)
        assert not errors, f"{operation.label} left a traceback in the service log:\n" + cloud.log_since(mark)[-3000:]

    run()


def test_openapi_operations_answer_as_documented(fuzz_cloud, api_schema):
    project = studio_project(fuzz_cloud)
    failures: list[str] = []
    seen: Counter = Counter()
    operations = 0
    nothing_to_negate: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # an operation the document describes badly fails here, naming it
        operations += 1
        # the studio has one project: its id in /v1/api/{pid}/... reaches the handlers behind the project check
        fixed = {"pid": project} if "{pid}" in operation.path else {}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                exercise(fuzz_cloud, operation, mode, fixed, seen)
            except Unsatisfiable:  # nothing in the operation to make invalid (no parameters, no body)
                if mode is GenerationMode.POSITIVE:
                    raise
                nothing_to_negate.append(operation.label)
            except (AssertionError, FailureGroup) as exc:  # every operation is fuzzed; all findings reported below
                failures.append(f"--- {operation.label} ({mode.value}):\n{str(exc)[:4000]}")
    print(f"\n[openapi fuzz] {operations} operations, {sum(seen.values())} requests; answers by status: {dict(sorted(seen.items()))}; "
          f"{len(nothing_to_negate)} without a negative case (nothing to make invalid)")
    assert operations >= 50, f"the document lists only {operations} operations"
    assert not failures, f"{len(failures)} operation/mode pairs failed:\n" + "\n".join(failures)
