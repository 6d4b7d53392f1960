"""Speculative decoding with tiny random models: greedy answers identical to the verifier alone (same
tokenizer, and across tokenizers through the union vocabulary), the sampling rule checked statistically, the
step-session operations it needs, streaming, tool calls, stops, failures and configuration."""

from __future__ import annotations

import asyncio

import pytest
import torch

from ensemble_core import Ensemble
from ensemble_core.asyncio_bridge import iterate_sync, run_sync
from ensemble_core.errors import AllMembersFailedError, CapabilityError, ConfigError, ContextWindowError
from ensemble_core.members.base import Capability
from ensemble_core.members.hf import HFMember
from ensemble_core.members.hf.int8_linear import int8_unavailable
from ensemble_core.members.hf.stepping import HFStepSession
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.mixing import sampling_probs
from ensemble_core.speculative_decoding import DraftSchedule, accept_draft
from ensemble_core.types import Params, ToolSpec
from tests.unit.tiny_models import byte_tokenizer, noisy_copy, respelled, tiny_llama, word_tokenizer

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "r"), ("Ġ", "a"), ("o", "n")]
PROMPTS = ["hello there", "the hello and the other", "abc"]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory):
    return HFMember(tiny_llama(tmp_path_factory.mktemp("verifier"), seed=1), name="verifier")


@pytest.fixture(scope="module")
def drafters(tmp_path_factory, verifier):
    """Drafters for the verifier: itself under another name (every draft kept), a noisy copy (most kept),
    an unrelated model (nearly none kept)."""
    source = verifier.folder
    return {
        "copy": HFMember(source, name="copy"),
        "noisy": HFMember(noisy_copy(source, tmp_path_factory.mktemp("noisy"), scale=0.1), name="noisy"),
        "unrelated": HFMember(tiny_llama(tmp_path_factory.mktemp("unrelated"), seed=0), name="unrelated"),
    }


@pytest.fixture(scope="module")
def respelled_drafter(tmp_path_factory, verifier):
    """The verifier's weights on a tokenizer with merges: other ids, other tokens, mostly the same text."""
    folder = respelled(verifier.folder, tmp_path_factory.mktemp("respelled"), byte_tokenizer(merges=MERGES))
    return HFMember(folder, name="respelled")


def speculative(drafter, verifier, **fields) -> Ensemble:
    return Ensemble([drafter, verifier], "speculative", **fields)


def alone(verifier, prompt: str, **params):
    return verifier.generate(Ensemble([verifier], "single", member=verifier.name).request(prompt, **params))


# greedy: the verifier's answer, token for token
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("draft_tokens", [1, 4, "adaptive"])
@pytest.mark.parametrize("kind", ["copy", "noisy", "unrelated"])
def test_greedy_answer_is_the_verifiers_own_same_tokenizer(drafters, verifier, kind, draft_tokens):
    ens = speculative(drafters[kind], verifier, draft_tokens=draft_tokens)
    for prompt in PROMPTS:
        result = ens.run(prompt, max_tokens=40)
        own = alone(verifier, prompt, max_tokens=40)
        assert result.text == own.text
        assert result.finish_reason == own.finish_reason
        details = result.trace.details
        assert details["tokens"] == own.usage.output_tokens
        assert details["tokenizers"] == "shared"
        assert 0 <= details["accepted"] <= details["drafted"]
        assert details["verifier_passes"] <= details["tokens"] + 1


def test_the_acceptance_rate_follows_how_alike_the_drafter_is(drafters, verifier):
    rates = {}
    for kind, drafter in drafters.items():
        details = speculative(drafter, verifier, draft_tokens=4).run(PROMPTS[1], max_tokens=40).trace.details
        rates[kind] = details["accepted"] / details["drafted"]
    assert rates["copy"] == 1.0
    assert rates["unrelated"] < rates["noisy"] < 1.0
    copy = (
        speculative(drafters["copy"], verifier, draft_tokens=4).run(PROMPTS[0], max_tokens=40).trace.details
    )
    assert copy["tokens"] == 40 and copy["verifier_passes"] == 8  # 4 drafts and 1 token of its own per pass


@pytest.mark.parametrize("direction", ["respelled drafts", "byte tokenizer drafts"])
def test_greedy_answer_is_the_verifiers_own_across_tokenizers(respelled_drafter, verifier, direction):
    drafter, checker = (
        (respelled_drafter, verifier) if direction == "respelled drafts" else (verifier, respelled_drafter)
    )
    ens = speculative(drafter, checker, draft_tokens=4)
    kept = 0
    for prompt in PROMPTS:
        result = ens.run(prompt, max_tokens=40)
        own = alone(checker, prompt, max_tokens=40)
        assert result.text == own.text
        assert result.trace.details["tokens"] == own.usage.output_tokens
        assert result.trace.details["tokenizers"].startswith("union vocabulary")
        kept += result.trace.details["accepted"]
    assert kept > 0  # the drafts are read across tokenizers, not only rejected


def test_a_tokenizer_that_cannot_spell_every_byte_is_refused_naming_both(tmp_path, verifier):
    words = HFMember(tiny_llama(tmp_path / "words", tokenizer=word_tokenizer()), name="words")
    with pytest.raises(CapabilityError, match=r"'words' and verifier 'verifier'.*spell every byte.*shares"):
        speculative(words, verifier).run("hello", max_tokens=4)


# sampling: distributed as the verifier's
# --------------------------------------------------------------------------------------------------
def _next_logprobs(member, prompt: str) -> torch.Tensor:
    return member.step_session([member.format_prompt(Ensemble([member]).request(prompt))]).logprobs()[0]


def _on_top_tokens(
    p_log: torch.Tensor, q_log: torch.Tensor, n: int = 12
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both log-distributions restricted to the verifier's and the drafter's `n` likeliest tokens: few enough
    outcomes that 6000 draws measure a distribution to about 0.02 in total variation."""
    keep = torch.zeros_like(p_log, dtype=torch.bool)
    keep[p_log.topk(n).indices] = True
    keep[q_log.topk(n).indices] = True
    out = [torch.where(keep, lp, torch.tensor(float("-inf"))) for lp in (p_log, q_log)]
    return out[0], out[1]


def _emitted(p_log, q_probs, params, per_round: int, n: int, fixed: bool, generator) -> torch.Tensor:
    """`n` answers of 3 tokens from a context-free verifier (the same distribution at every position)
    drafted by a context-free drafter `q_probs`, `per_round` drafts a round: each answer's tokens should be
    independent draws from the verifier's distribution, whatever was kept or rejected."""
    answers = []
    for _ in range(n):
        out: list[int] = []
        while len(out) < 3:
            draft = torch.multinomial(q_probs, per_round, replacement=True, generator=generator).tolist()
            probs = None if fixed else [q_probs] * per_round
            kept, token = accept_draft([p_log] * (per_round + 1), draft, probs, params, generator)
            out.extend([*draft[:kept], token])
        answers.append(out[:3])
    return torch.tensor(answers)


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a / a.sum() - b / b.sum()).abs().sum())


@pytest.mark.parametrize("fixed", [False, True], ids=["same tokenizer rule", "fixed proposal rule"])
def test_sampled_tokens_are_distributed_as_the_verifiers(drafters, verifier, fixed):
    """The verifier's and an unrelated drafter's real next-token distributions (on their likeliest tokens,
    after temperature 0.3): over 6000 seeded answers of 3 tokens, every position's tokens match the
    verifier's distribution within 0.05 total variation (sampling noise is about 0.02), and the first two
    tokens are as independent as the verifier's own draws. The bound is tight enough to catch a
    rule that kept every draft (the drafter's distribution) or resampled a rejection from p instead of
    max(0, p - q), which the test checks too."""
    params = Params(temperature=0.3, top_p=1.0)
    p_log, q_log = _on_top_tokens(
        _next_logprobs(verifier, "hello"), _next_logprobs(drafters["unrelated"], "hello")
    )
    p, q = sampling_probs(p_log[None], params)[0], sampling_probs(q_log[None], params)[0]
    overlap = torch.minimum(p, q)
    wrong_residual = overlap + (1 - overlap.sum()) * p  # rejections resampled from p itself
    assert _tv(q, p) > 0.3 and _tv(wrong_residual, p) > 0.1
    answers = _emitted(p_log, q, params, 3, 6000, fixed, torch.Generator().manual_seed(1234))
    width = p.shape[-1]
    for position in range(3):
        counts = torch.bincount(answers[:, position], minlength=width).float()
        assert _tv(counts, p) < 0.05, position
    # independence, on 4 outcomes a position (the verifier's 3 likeliest tokens, anything else)
    bucket = torch.full((width,), 3, dtype=torch.long)
    bucket[p.topk(3).indices] = torch.arange(3)
    first, second = bucket[answers[:, 0]], bucket[answers[:, 1]]
    pairs = torch.bincount(first * 4 + second, minlength=16).float()
    marginal = torch.zeros(4).index_add_(0, bucket, p)
    assert _tv(pairs, (marginal[:, None] * marginal[None, :]).reshape(-1)) < 0.05


def test_sampling_is_reproducible_with_a_seed_and_varies_without(drafters, verifier):
    ens = speculative(drafters["noisy"], verifier, draft_tokens=3)
    first = ens.run(PROMPTS[0], max_tokens=16, temperature=0.8, seed=7).text
    assert ens.run(PROMPTS[0], max_tokens=16, temperature=0.8, seed=7).text == first
    assert len({ens.run(PROMPTS[0], max_tokens=16, temperature=1.5, seed=s).text for s in range(4)}) > 1


def test_sampled_answers_keep_within_max_tokens_across_tokenizers(respelled_drafter, verifier):
    result = speculative(respelled_drafter, verifier).run(PROMPTS[1], max_tokens=12, temperature=0.7, seed=3)
    assert result.trace.details["tokens"] <= 12


# step sessions: every position's distribution, and taking ids back
# --------------------------------------------------------------------------------------------------
def test_advance_positions_gives_what_one_id_at_a_time_gives(verifier):
    chunked = verifier.step_session(["hello there"])
    stepped = verifier.step_session(["hello there"])
    ids = [40, 41, 42, 43]
    rows = chunked.advance_positions([ids])[0]
    assert rows.shape == (4, chunked.vocab_size)
    for i, token in enumerate(ids):
        torch.testing.assert_close(rows[i], stepped.advance([[token]])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.logprobs()[0], rows[-1])


def test_a_rewound_session_reads_on_as_if_the_ids_had_never_been_fed(verifier):
    session = verifier.step_session(["hello there"])
    fresh = verifier.step_session(["hello there"])
    session.advance_positions([[50, 51, 52, 53]])
    session.rewind([3])
    assert session.token_ids(0) == fresh.token_ids(0) + [50]
    assert session.cache.get_seq_length() == len(session.token_ids(0))
    torch.testing.assert_close(session.logprobs()[0], fresh.advance([[50]])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        session.advance([[60, 61]])[0], fresh.advance([[60, 61]])[0], atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="keeps one id"):
        session.rewind([len(session.token_ids(0))])


def test_rows_rewind_by_different_counts(verifier):
    prompts = ["a short one", "a considerably longer prompt"]
    batch = verifier.step_session(prompts)
    singles = [verifier.step_session([p]) for p in prompts]
    batch.advance([[5, 6, 7], [8]])
    batch.rewind([2, 0])
    batch.advance([[9], [10, 11]])
    singles[0].advance([[5, 9]])
    singles[1].advance([[8, 10, 11]])
    for row, single in enumerate(singles):
        assert batch.token_ids(row) == single.token_ids(0)
        torch.testing.assert_close(batch.logprobs()[row], single.logprobs()[0], atol=1e-4, rtol=1e-4)


NO_INT8 = int8_unavailable("int8", torch.device("cpu"), torch.bfloat16)


@pytest.mark.parametrize(
    ("weights", "tolerance"),
    [
        ("float32", 1e-5),
        pytest.param("int8", 1e-4, marks=pytest.mark.skipif(bool(NO_INT8), reason=str(NO_INT8))),
    ],
)
def test_a_narrowed_session_gives_the_distribution_over_its_ids_only(verifier, weights, tolerance):
    member = verifier
    if weights == "int8":  # an int8 output layer narrows through its rows
        member = HFMember(verifier.folder, name="verifier-int8", dtype="bfloat16", quantization="int8")
    full = member.step_session(["hello there"])
    narrow = member.step_session(["hello there"])
    ids = [*range(100), 200, 250]
    narrow.narrow(ids)
    for session in (full, narrow):
        session.advance([[40, 41]])
    kept = full.logprobs()[0][ids]
    expected = kept - kept.logsumexp(-1)
    torch.testing.assert_close(narrow.logprobs()[0][ids], expected, atol=tolerance, rtol=tolerance)
    others = torch.ones(narrow.vocab_size, dtype=torch.bool)
    others[ids] = False
    assert torch.isinf(narrow.logprobs()[0][others]).all()


def test_a_drafter_proposing_part_of_the_vocabulary_leaves_the_answer_unchanged(drafters, verifier):
    ens = speculative(drafters["noisy"], verifier, draft_tokens=4, draft_vocab=256)
    for prompt in PROMPTS:
        result = ens.run(prompt, max_tokens=40)
        assert result.text == alone(verifier, prompt, max_tokens=40).text
        assert result.trace.details["accepted"] > 0


def test_a_recorded_session_counts_every_checked_position(drafters, verifier):
    result = speculative(drafters["copy"], verifier, draft_tokens=4).run(PROMPTS[0], max_tokens=20)
    calls = {c.role: c for c in result.trace.calls}
    assert set(calls) == {"draft", "verify"} and all(c.ok for c in calls.values())
    assert calls["verify"].member == "verifier" and calls["draft"].member == "copy"
    assert all(0 < (c.cpu_s or 0) for c in calls.values())  # measured, as for generate and score
    assert calls["verify"].usage.output_tokens >= result.trace.details["tokens"]
    assert calls["verify"].usage.input_tokens == len(
        verifier.encode_text(verifier.format_prompt(Ensemble([verifier]).request(PROMPTS[0])))
    )


# ending, streaming, tools
# --------------------------------------------------------------------------------------------------
def test_max_tokens_ends_with_length(drafters, verifier):
    result = speculative(drafters["noisy"], verifier, draft_tokens=4).run(PROMPTS[0], max_tokens=5)
    assert result.trace.details["tokens"] == 5 and result.finish_reason == "length"


def test_a_stop_string_cuts_the_answer_where_the_verifier_alone_stops(drafters, verifier):
    full = alone(verifier, PROMPTS[0], max_tokens=30).text
    stop = full[6:8]
    assert stop and stop not in full[:6]
    result = speculative(drafters["noisy"], verifier, draft_tokens=4).run(
        PROMPTS[0], max_tokens=30, stop=[stop]
    )
    assert (
        result.text
        == alone(verifier, PROMPTS[0], max_tokens=30, stop=[stop]).text
        == full[: full.index(stop)]
    )
    assert result.finish_reason == "stop"


def test_streamed_deltas_join_to_the_answer_and_end_with_the_trace(drafters, verifier):
    ens = speculative(drafters["noisy"], verifier, draft_tokens=4)
    deltas = list(ens.stream(PROMPTS[0], max_tokens=24))
    final = deltas[-1]
    assert final.final and final.trace is not None and final.trace.details["drafted"] > 0
    assert final.finish_reason == "length" and final.member == "verifier"
    assert "".join(d.text for d in deltas[:-1]) == alone(verifier, PROMPTS[0], max_tokens=24).text
    assert len(deltas) > 3  # text arrives as the rounds decide it


def test_a_grammar_constrained_request_is_the_verifiers_alone(drafters, verifier):
    word = {"type": "string", "enum": ["hi", "yo"]}
    schema = {"type": "object", "properties": {"w": word}, "required": ["w"], "additionalProperties": False}
    tool = ToolSpec(name="lookup", description="look a word up", parameters=schema)
    # the tools in the prompt take more than the tiny models' 256 positions; their rotary embeddings go on
    checker = HFMember(verifier.folder, name="verifier", context_window=1024)
    drafter = HFMember(drafters["noisy"].folder, name="noisy", context_window=1024)
    ens = speculative(drafter, checker, draft_tokens=4)
    request = ens.request("find hello", max_tokens=160, tools=[tool], tool_choice="lookup")
    result = run_sync(ens.arun_request(request))
    own = checker.generate(request)
    calls = [(c.name, c.arguments) for c in result.tool_calls]
    assert (result.text, calls) == (own.text, [(c.name, c.arguments) for c in own.tool_calls])
    assert [name for name, _ in calls] == ["lookup"] and result.trace.details["constrained"] is True
    assert [c.member for c in result.trace.calls] == ["verifier"]  # nothing drafted
    deltas = list(iterate_sync(ens.astream_request(request)))
    assert deltas[-1].final and deltas[-1].member == "verifier"
    assert "answers alone under its grammar" in deltas[-1].trace.reason


# failures
# --------------------------------------------------------------------------------------------------
class _BrokenDrafter(HFMember):
    def step_session(self, prompts):
        raise RuntimeError("no cache today")


def test_a_failing_drafter_leaves_the_verifier_to_answer_alone(verifier):
    broken = _BrokenDrafter(verifier.folder, name="broken")
    result = speculative(broken, verifier).run(PROMPTS[0], max_tokens=12)
    assert result.text == alone(verifier, PROMPTS[0], max_tokens=12).text
    assert "no cache today" in result.trace.details["drafter_error"]
    assert result.trace.details["drafted"] == 0
    assert {(c.member, c.ok) for c in result.trace.calls} == {("broken", False), ("verifier", True)}


def test_a_drafter_past_its_timeout_is_dropped_and_the_answer_is_unchanged(verifier):
    slow = HFMember(verifier.folder, name="slow", timeout_s=1e-9)
    result = speculative(slow, verifier, draft_tokens=2).run(PROMPTS[1], max_tokens=12)
    assert (
        "timed out" in result.trace.details["drafter_error"]
        or "stepping took" in result.trace.details["drafter_error"]
    )
    assert result.text == alone(verifier, PROMPTS[1], max_tokens=12).text


def test_a_failing_verifier_leaves_the_drafter_to_answer_and_is_recorded(drafters, verifier):
    broken = _BrokenDrafter(verifier.folder, name="broken_verifier")
    ens = speculative(drafters["copy"], broken)
    result = ens.run(PROMPTS[0], max_tokens=8)
    assert result.text == alone(drafters["copy"], PROMPTS[0], max_tokens=8).text
    assert result.trace.chosen == "copy" and "broken_verifier failed" in result.trace.reason
    assert ("broken_verifier", False) in {(c.member, c.ok) for c in result.trace.calls}
    deltas = list(ens.stream(PROMPTS[0], max_tokens=8))
    assert "".join(d.text for d in deltas) == result.text and deltas[-1].member == "copy"


class _Down(_BrokenDrafter):
    async def agenerate(self, request):
        raise RuntimeError("down for maintenance")


def test_when_both_fail_the_error_names_both(verifier):
    ens = speculative(_Down(verifier.folder, name="d"), _BrokenDrafter(verifier.folder, name="v"))
    with pytest.raises(AllMembersFailedError, match="no cache today.*down for maintenance") as caught:
        ens.run(PROMPTS[0], max_tokens=8)
    assert set(caught.value.errors) == {"v", "d"}


def test_a_prompt_over_the_verifiers_window_is_a_context_window_error(drafters, verifier):
    short = HFMember(verifier.folder, name="short", context_window=8)
    with pytest.raises(ContextWindowError, match="short"):
        speculative(drafters["copy"], short).run("a prompt far longer than eight tokens", max_tokens=4)


async def test_a_cancelled_request_stops_stepping(drafters, verifier):
    ens = speculative(drafters["noisy"], verifier, draft_tokens=2)
    task = asyncio.ensure_future(ens.arun("hello", max_tokens=200))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# configuration
# --------------------------------------------------------------------------------------------------
def test_the_first_member_drafts_for_the_last_by_default_and_only_they_are_used(drafters, verifier):
    third = ScriptedMember("api", ["hi"])
    ens = Ensemble([drafters["copy"], third, verifier], "speculative")
    assert [m.name for m in ens.members_used()] == ["copy", "verifier"]
    named = Ensemble([verifier, third, drafters["copy"]], "speculative", drafter="copy", verifier="verifier")
    assert [m.name for m in named.members_used()] == ["copy", "verifier"]
    listed = Ensemble([verifier, drafters["copy"]], "speculative", members=["copy", "verifier"])
    assert listed.strategy.pair(list(listed.members.values()))[0].name == "copy"


def test_invalid_configurations_name_the_problem(drafters, verifier):
    with pytest.raises(ConfigError, match="cannot draft for itself"):
        Ensemble([verifier], "speculative")
    with pytest.raises(ConfigError, match="two members"):
        Ensemble([drafters["copy"], verifier], "speculative", members=["copy"])
    with pytest.raises(ConfigError, match="not both"):
        Ensemble([drafters["copy"], verifier], "speculative", members=["copy", "verifier"], drafter="copy")
    with pytest.raises(ConfigError, match="no member is named 'nobody'"):
        Ensemble([drafters["copy"], verifier], "speculative", drafter="nobody")
    with pytest.raises(ConfigError, match="draft_tokens"):
        Ensemble([drafters["copy"], verifier], "speculative", draft_tokens=0)
    with pytest.raises(CapabilityError, match="step"):
        Ensemble([ScriptedMember("api", ["hi"]), verifier], "speculative")
    stepper = ScriptedMember(
        "stepper", ["hi"], capabilities=frozenset({Capability.GENERATE, Capability.STEP})
    )
    with pytest.raises(ConfigError, match="tokenizer"):
        Ensemble([stepper, verifier], "speculative")


def test_the_adaptive_schedule_grows_after_full_rounds_and_shrinks_after_rejections():
    schedule = DraftSchedule(fixed=None, maximum=8, min_confidence=0.4)
    assert schedule.current == 4
    schedule.update(drafted=4, kept=4)
    schedule.update(drafted=6, kept=6)
    assert schedule.current == 8  # capped
    schedule.update(drafted=8, kept=2)
    assert schedule.current == 7
    assert schedule.stops_at(0.3) and not schedule.stops_at(0.5)
    fixed = DraftSchedule(fixed=3, maximum=8, min_confidence=0.4)
    fixed.update(drafted=3, kept=0)
    assert fixed.current == 3 and not fixed.stops_at(0.0)


class _SlidingSession(HFStepSession):
    @property
    def supports_rewind(self) -> bool:
        return False  # as for a model with sliding-window layers


class _Unrewindable(HFMember):
    def step_session(self, prompts):
        lm = self.loaded()
        return _SlidingSession(lm, [lm.encode_text(p) for p in prompts])


@pytest.mark.parametrize("role", ["drafter", "verifier"])
def test_a_member_whose_cache_cannot_take_tokens_back_is_refused(drafters, verifier, role):
    sliding = _Unrewindable(verifier.folder, name="sliding")
    pair = (sliding, verifier) if role == "drafter" else (drafters["copy"], sliding)
    with pytest.raises(CapabilityError, match="'sliding'.*cannot take back tokens.*full attention"):
        speculative(*pair).run(PROMPTS[0], max_tokens=4)


def test_sliding_window_and_full_attention_caches_are_told_apart():
    from transformers import DynamicCache, Qwen2Config

    from ensemble_core.members.hf.cache import can_drop_last

    full = Qwen2Config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    sliding = Qwen2Config(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=0,
    )
    assert can_drop_last(DynamicCache(config=full))
    assert not can_drop_last(DynamicCache(config=sliding))
