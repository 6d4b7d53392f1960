"""A property-based fuzz of `llm-ensemble serve` from its own OpenAPI schema, with schemathesis, against a
real uvicorn server on loopback: valid and invalid requests to every operation, each response checked for
a 5xx, a status code, content type or body the schema does not declare, a schema-invalid request that was
not refused, and an operation that answers without the API key. Bounded: 150 examples an operation, each
within 5 s; the `slow` variant runs 2,000."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ensemble_core import Ensemble, ToolCall
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.service import ServiceSettings, create_app
from ensemble_core.types import Request
from tests.serving import serving

KEY = "sk-fuzz-0123456789"
#: Valid-by-schema requests the ensemble still refuses on grounds a schema cannot state (a JSON response
#: format its scripted members cannot constrain, say) are 400s, so "schema-valid means 2xx" is not checked.
EXCLUDED = [positive_data_acceptance]
FUZZ = settings(deadline=timedelta(seconds=5), suppress_health_check=list(HealthCheck), derandomize=True)


def _reply(request: Request) -> str | ToolCall:
    if request.tools and request.messages[-1].role == "user":
        return ToolCall(name=request.tools[0].name, arguments={})
    return "fuzzed answer"


def _ensemble() -> Ensemble:
    return Ensemble([ScriptedMember("a", _reply), ScriptedMember("b", _reply)], "fallback")


def _settings() -> ServiceSettings:
    return ServiceSettings(api_keys=[SecretStr(KEY)])


#: The app's own OpenAPI schema (loaded here, so the cases exist at collection; each one is sent to the
#: live server, which serves the same schema at /openapi.json).
OPENAPI = create_app(_ensemble(), _settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def live_root():
    with serving(_ensemble(), api_keys=_settings().api_keys) as url:
        root = url.removesuffix("/v1")
        assert httpx.get(f"{root}/openapi.json").json() == OPENAPI
        yield root


def _sent_and_checked(case: schemathesis.Case, root: str) -> None:
    case.call_and_validate(
        base_url=root, headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=EXCLUDED, timeout=30
    )


@schema.parametrize()
@settings(FUZZ, max_examples=150)
def test_the_service_survives_its_own_schema_fuzzed(case, live_root):
    _sent_and_checked(case, live_root)


@pytest.mark.slow
@schema.parametrize()
@settings(FUZZ, max_examples=2000, derandomize=False)
def test_the_service_survives_a_long_fuzz(case, live_root):
    _sent_and_checked(case, live_root)
