"""The engine on the packaged default models: answers, scores, steps, errors, conversion cache, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ensemble_core import ContextWindowError, Ensemble
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.types import Request, to_messages

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_score_prefers_paris_over_london(name, request):
    member = request.getfixturevalue(name)
    paris, london = member.score(
        [("The capital of France is", " Paris"), ("The capital of France is", " London")]
    )
    assert paris.sum_logprob > london.sum_logprob


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_step_reproduces_generate_greedy(name, request):
    member = request.getfixturevalue(name)
    prompt = member.format_prompt(Request(messages=to_messages("Tell me about the city of Paris in France.")))
    ids = member.encode_text(prompt)
    reference = member.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=32,
        do_sample=False,
        eos_token_id=member.eos_ids(),
        pad_token_id=member.loaded().pad_id(),
    )[0, len(ids) :].tolist()
    session = member.step_session([prompt])
    stepped: list[int] = []
    for _ in range(32):
        token = int(session.logprobs()[0].argmax())
        stepped.append(token)
        if token in member.eos_ids():
            break
        session.advance([[token]])
    assert stepped == reference
    assert len(stepped) >= 8


def test_default_ensemble_answers_paris(small_pair):
    ens = Ensemble(small_pair)
    result = ens.run("What is the capital of France?", max_tokens=32)
    assert "Paris" in result.text
    assert result.trace.chosen == "smollm2" and result.trace.calls[0].prompt_format == "chat-template"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0


def test_gemma_uses_the_plain_format_and_says_so(gemma3):
    result = Ensemble([gemma3], "single", member="gemma3").run(
        "What is the capital of France?", max_tokens=16
    )
    assert "Paris" in result.text
    assert result.trace.calls[0].prompt_format == "plain-qa"


async def test_stream_and_async_agree_with_run(small_pair):
    ens = Ensemble(small_pair, "single", member="smollm2")
    question = "Name three colours."
    ran = ens.run(question, max_tokens=24)
    streamed = list(ens.stream(question, max_tokens=24))
    assert "".join(d.text for d in streamed) == ran.text
    assert len([d for d in streamed if d.text]) > 3  # token by token, not one block
    assert streamed[-1].usage == ran.usage
    assert (await ens.arun(question, max_tokens=24)).text == ran.text


def test_fallback_recovers_from_a_broken_member(smollm2):
    ens = Ensemble([ScriptedMember("broken", [ConnectionError("refused")]), smollm2])
    result = ens.run("What is the capital of France?", max_tokens=16)
    assert "Paris" in result.text
    assert result.trace.calls[0].ok is False and "refused" in result.trace.calls[0].error


def test_prompt_longer_than_the_context_window_is_refused(smollm2):
    with pytest.raises(ContextWindowError, match="context window of 8192 tokens"):
        Ensemble([smollm2], "single", member="smollm2").run("word " * 9000, max_tokens=4)


def test_second_load_does_not_dequantise_again(smollm2, monkeypatch):
    from ensemble_core.members import weights

    target = weights.converted_folder(smollm2.folder, smollm2.gguf_file)
    assert weights.is_converted(target)

    def fail(*args, **kwargs):
        raise AssertionError("de-quantised again")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", fail)
    assert weights.convert_gguf(smollm2.folder, smollm2.gguf_file) == target


def test_cli_ask_json_answers_paris():
    out = subprocess.run(
        [sys.executable, "-m", "ensemble_core.cli", "ask", "What is the capital of France?", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    payload = json.loads(out.stdout)
    assert "Paris" in payload["answer"]
    assert payload["trace"]["strategy"] == "rule-router"
    assert [c["member"] for c in payload["trace"]["calls"]] == ["qwen15"]  # no tools: the stronger member
