"""HFMember mechanics on a tiny random Llama: exact equalities between generate, step and score paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ensemble_core import ContextWindowError, ModelNotFoundError
from ensemble_core.members.hf import HFMember
from ensemble_core.types import Params, Request, to_messages


def _request(text: str, **params) -> Request:
    return Request(messages=to_messages(text), params=Params(**params))


def test_missing_path_names_the_problem(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        HFMember(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="no GGUF file 'x.gguf'"):
        HFMember(tmp_path, gguf_file="x.gguf")


def test_pickle_weights_are_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ModelNotFoundError, match="pickle weights pytorch_model.bin"):
        HFMember(tmp_path)


def test_greedy_step_reproduces_generate(tiny_member):
    request = _request("hello", max_tokens=24)
    generated = tiny_member.generate(request)
    session = tiny_member.step_session([tiny_member.format_prompt(request)])
    eos = set(tiny_member.eos_ids())
    stepped: list[int] = []
    for _ in range(request.params.max_tokens):
        token = int(session.logprobs()[0].argmax())
        if token in eos:
            break
        stepped.append(token)
        session.advance([[token]])
    assert tiny_member.tokenizer.decode(stepped) == generated.text
    assert len(generated.logprobs) == generated.usage.output_tokens == len(stepped)
    steps = [float(lp.logprob) for lp in generated.logprobs]
    assert all(lp <= 0 for lp in steps)


def test_ragged_batched_steps_match_single_rows(tiny_member):
    prompts = ["a short one", "a considerably longer prompt here"]
    batch = tiny_member.step_session(prompts)
    singles = [tiny_member.step_session([p]) for p in prompts]
    feeds = [[[5, 6], [7]], [[], [8, 9, 10]], [[11], [12]]]
    for feed in feeds:
        batch.advance(feed)
        for row, single in enumerate(singles):
            single.advance([feed[row]])
    for row, single in enumerate(singles):
        assert batch.token_ids(row) == single.token_ids(0)
        torch.testing.assert_close(batch.logprobs()[row], single.logprobs()[0], atol=1e-4, rtol=1e-4)


def test_batched_score_equals_one_by_one(tiny_member):
    pairs = [("The capital of France is", " Paris"), ("2 + 2 =", " 4"), ("", "hello world")]
    together = tiny_member.score(pairs)
    alone = [tiny_member.score([p])[0] for p in pairs]
    for a, b in zip(together, alone, strict=True):
        assert a.n_tokens == b.n_tokens and a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-4)
    assert (
        together[0].n_chars == 6
        and together[0].mean_logprob == together[0].sum_logprob / together[0].n_tokens
    )


def test_score_matches_the_step_distribution(tiny_member):
    prompt, continuation = "abc", "de"
    score = tiny_member.score([(prompt, continuation)])[0]
    session = tiny_member.step_session([prompt])
    total = 0.0
    for token in tiny_member.tokenizer(continuation, add_special_tokens=False)["input_ids"]:
        total += float(session.logprobs()[0, token])
        session.advance([[token]])
    assert score.sum_logprob == pytest.approx(total, abs=1e-4)


def test_stream_joins_to_generate_and_stops_at_stop_strings(tiny_member):
    request = _request("hi", max_tokens=20)
    full = tiny_member.generate(request)
    deltas = list(tiny_member.stream(request))
    assert "".join(d.text for d in deltas) == full.text
    assert deltas[-1].final and deltas[-1].usage == full.usage
    assert len(full.text) > 4  # the seeded tiny model writes its whole budget
    stop = full.text[2:4]
    cut = tiny_member.generate(_request("hi", max_tokens=20, stop=[stop]))
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(tiny_member):
    a = tiny_member.generate(_request("hi", max_tokens=12, temperature=1.0, seed=7))
    b = tiny_member.generate(_request("hi", max_tokens=12, temperature=1.0, seed=7))
    assert a.text == b.text and a.usage.output_tokens > 0


def test_max_tokens_ends_with_length(tiny_member):
    result = tiny_member.generate(_request("hi", max_tokens=3))
    assert result.usage.output_tokens == 3  # the seeded tiny model never ends on its own this early
    assert result.finish_reason == "length"


def test_prompt_over_the_context_window_is_a_clear_error(tiny_member):
    with pytest.raises(ContextWindowError, match=r"context window of 256 tokens"):
        tiny_member.generate(_request("x" * 400))
    with pytest.raises(ContextWindowError):
        tiny_member.step_session(["y" * 300])


def test_plain_format_for_models_without_a_template(tmp_path):
    from tests.unit.tiny_models import tiny_llama

    member = HFMember(tiny_llama(tmp_path / "base", chat_template=None), name="base")
    request = Request(
        messages=to_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}])
    )
    assert member.format_prompt(request) == "Be brief.\n\nQuestion: Hi?\nAnswer:"
    assert member.generate(request.with_params(max_tokens=4)).prompt_format == "plain-qa"


def test_weights_load_memory_mapped_from_their_safetensors_file(tiny_member):
    """The parameters live on a mapping of the weights file (a warm start reads the page cache, and members
    of one model in several processes share it), not on a private copy."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps (Linux)")
    params = list(tiny_member.model.parameters())  # loaded
    weights = str((tiny_member.folder / "model.safetensors").resolve())
    spans = []
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == weights:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            spans.append((start, end))
    mapped = [p for p in params if any(a <= p.data_ptr() < b for a, b in spans)]
    assert spans and len(mapped) == len(params)
