"""The deployment recipe of docs/deployment.md on loopback: members behind their own OpenAI-compatible
servers (a real llama.cpp server here; vLLM/SGLang/TGI in production), mixed with a local member, and the
ensemble itself served as a stateless OpenAI-compatible service in front."""

from __future__ import annotations

import openai
import pytest

from ensemble_core import Ensemble
from ensemble_core.members.openai_compat import OpenAICompatMember
from tests.serving import serving

pytestmark = [pytest.mark.integration, pytest.mark.server]


@pytest.fixture(scope="module")
def remote(llama_server):
    member = OpenAICompatMember(base_url=llama_server, model="smollm2", name="remote", timeout_s=120)
    member.load()
    return member


def test_span_fusion_with_a_remote_member_scoring_over_http(remote, gemma3):
    ens = Ensemble([remote, gemma3], "span-fusion")
    result = ens.run("What is the capital of France?", max_tokens=16)
    assert "Paris" in result.text
    roles = {(c.member, c.role) for c in result.trace.calls}
    assert any(m == "remote" for m, _ in roles) and any(m == "gemma3" for m, _ in roles)


def test_rank_and_fuse_ranks_remote_and_local_candidates(remote, smollm2):
    ens = Ensemble([remote, smollm2], "rank-and-fuse", judge="smollm2")
    result = ens.run("What is the capital of France?", max_tokens=16)
    assert "Paris" in result.text
    assert {c.member for c in result.trace.calls if c.ok} >= {"remote", "smollm2"}


def test_the_ensemble_as_a_service_in_front_of_remote_members(remote, smollm2):
    ens = Ensemble([remote, smollm2], "fallback")
    with serving(ens) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        completion = client.chat.completions.create(
            model="ensemble",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
        )
        assert "Paris" in completion.choices[0].message.content
        assert completion.model_extra["ensemble_trace"]["chosen"] == "remote"
        streamed = client.chat.completions.create(
            model="ensemble",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            stream=True,
        )
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_a_2_mb_prompt_is_the_clients_400_and_opens_no_circuit(remote):
    """llama.cpp refuses a prompt over its context with HTTP 400: the service passes that on as the
    client's 400 (not a 502), and the member's circuit stays closed."""
    with serving(Ensemble([remote], "fallback")) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        for _ in range(2):
            with pytest.raises(openai.BadRequestError, match="maximum context length"):
                client.chat.completions.create(
                    model="ensemble", messages=[{"role": "user", "content": "word " * 400_000}], max_tokens=4
                )
        assert remote.breaker.state == "closed"
        answer = client.chat.completions.create(
            model="ensemble", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
        )
        assert answer.choices[0].message.content
