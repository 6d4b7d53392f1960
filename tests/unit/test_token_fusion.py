"""TokenFusion with tiny random models (same byte tokenizer, and a second tokenizer with merges for the
cross-tokenizer path), and the vocabulary alignment with the real packaged tokenizers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from ensemble_core import Ensemble
from ensemble_core.alignment import align
from ensemble_core.errors import CapabilityError, ConfigError, ModelNotFoundError
from ensemble_core.fused_decoding import FusedDecoding, member_alignment
from ensemble_core.members.base import Capability
from ensemble_core.members.hf import HFMember
from ensemble_core.members.scripted import ScriptedMember
from ensemble_core.mixing import Mixer
from ensemble_core.scoring.packllm import FusedPromptPerplexity
from ensemble_core.strategies import TokenFusion
from ensemble_core.strategies.token_fusion import prompt_text

PROMPT = "hello there"


def fused(members, **fields) -> Ensemble:
    return Ensemble(members, TokenFusion(**fields))


# identity
# -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixing", ["prob", "logit"])
@pytest.mark.parametrize("lead", [0, 1])
def test_full_weight_on_one_member_reproduces_its_greedy_output_same_tokenizer(tiny_pair, lead, mixing):
    member = tiny_pair[lead]
    ens = fused(tiny_pair, weights={member.name: 1.0}, mixing=mixing)
    result = ens.run(PROMPT, max_tokens=24)
    alone = member.generate(ens.request(PROMPT, max_tokens=24))
    assert result.text == alone.text
    assert result.trace.details["fused_tokens"] == alone.usage.output_tokens
    assert result.trace.details["tokenizers"] == "shared"


@pytest.mark.parametrize("lead", [0, 1])
def test_full_weight_on_one_member_reproduces_its_greedy_output_cross_tokenizer(
    tiny_member, merged_member, lead
):
    members = [tiny_member, merged_member]
    member = members[lead]
    ens = fused(members, weights={member.name: 1.0})
    request = ens.request("the hello and the other", max_tokens=32)
    alone = member.generate(request)
    decoding = FusedDecoding(members, [request], torch.tensor([[1.0 - lead, float(lead)]]), "prob")
    outcome = decoding.run()[0]
    assert not decoding.alignment.shared
    assert outcome.text == alone.text
    assert outcome.n_tokens == alone.usage.output_tokens
    # Both members spell exactly the same bytes, each in its own ids.
    chosen = decoding.alignment.text_bytes(decoding.chosen[0])
    for m, name in enumerate(["tiny", "merged"]):
        assert decoding.alignment.tables[m].text_bytes(outcome.member_ids[name]) == chosen


def test_the_follower_is_fed_its_own_spelling_of_tokens_it_lacks(tiny_member, merged_member):
    alignment = member_alignment([tiny_member, merged_member])
    the = alignment.union_bytes.index(b" the")
    assert alignment.from_union[0][the] == -1  # the byte tokenizer has no " the" token
    fed = alignment.feed(0, the)
    assert tiny_member.tokenizer.decode(fed) == " the" and len(fed) == 4


# ending, streaming, trace
# ---------------------------------------------------------------------------------------
def test_max_tokens_ends_the_answer_with_length(tiny_pair):
    result = fused(tiny_pair).run(PROMPT, max_tokens=5)
    assert result.trace.details["fused_tokens"] == 5  # the seeded tiny pair never ends on its own this early
    assert result.finish_reason == "length"


def test_a_stop_string_cuts_the_text(tiny_pair):
    ens = fused(tiny_pair, weights={"tiny": 1.0})
    full = ens.run(PROMPT, max_tokens=24).text
    stop = full[6:8]
    assert stop and stop not in full[:6]
    result = ens.run(PROMPT, max_tokens=24, stop=[stop])
    assert result.text == full[: full.index(stop)]
    assert result.finish_reason == "stop"


def test_streamed_deltas_join_to_the_run_text(tiny_pair):
    ens = fused(tiny_pair, mixing="logit")
    deltas = list(ens.stream(PROMPT, max_tokens=16))
    assert deltas[-1].final and deltas[-1].trace is not None
    assert "".join(d.text for d in deltas[:-1]) == ens.run(PROMPT, max_tokens=16).text


def test_trace_records_weights_agreement_and_per_member_calls(tiny_pair):
    result = fused(tiny_pair, weights={"tiny": 3.0, "tiny_b": 1.0}, trace_tokens=True).run(
        PROMPT, max_tokens=8
    )
    details = result.trace.details
    assert details["weights"] == pytest.approx({"tiny": 0.75, "tiny_b": 0.25})
    n = details["fused_tokens"]
    assert len(details["tokens"]) == n
    for name in ("tiny", "tiny_b"):
        assert details["agreement"][name] == sum(name in t["agreed"] for t in details["tokens"])
    assert [c.member for c in result.trace.calls] == ["tiny", "tiny_b"]
    assert all(c.usage.output_tokens == n for c in result.trace.calls)
    assert result.usage.input_tokens == sum(c.usage.input_tokens for c in result.trace.calls) > 0


def test_sampling_is_reproducible_with_a_seed(tiny_pair):
    ens = fused(tiny_pair)
    first = ens.run(PROMPT, max_tokens=12, temperature=1.0, top_p=0.9, seed=7).text
    assert ens.run(PROMPT, max_tokens=12, temperature=1.0, top_p=0.9, seed=7).text == first
    greedy = ens.run(PROMPT, max_tokens=12).text
    samples = {ens.run(PROMPT, max_tokens=12, temperature=1.5, seed=s).text for s in range(4)}
    assert samples != {greedy}


def test_a_batch_decodes_rows_together_and_matches_single_requests(tiny_pair):
    ens = fused(tiny_pair, batch_size=2)
    prompts = [PROMPT, "a much longer prompt than the first one", "third"]
    batch = ens.batch(prompts, max_tokens=10)
    assert [r.text for r in batch] == [ens.run(p, max_tokens=10).text for p in prompts]
    assert all(len(r.trace.calls) == 2 for r in batch)  # one trace per request


# failures and configuration
# -------------------------------------------------------------------------------------
def test_a_member_without_the_step_capability_is_a_construction_error(tiny_member):
    with pytest.raises(CapabilityError, match="step"):
        Ensemble([tiny_member, ScriptedMember("api", ["hi"])], "token-fusion")


def test_a_step_member_without_a_tokenizer_is_a_construction_error(tiny_member):
    stepper = ScriptedMember(
        "stepper", ["hi"], capabilities=frozenset({Capability.GENERATE, Capability.STEP})
    )
    with pytest.raises(CapabilityError, match="tokenizer"):
        Ensemble([tiny_member, stepper], "token-fusion")


def test_fixed_weights_must_name_fused_members(tiny_pair):
    with pytest.raises(ConfigError, match="nobody"):
        Ensemble(tiny_pair, "token-fusion", weights={"nobody": 1.0})
    with pytest.raises(ConfigError, match="not all be 0"):
        Ensemble(tiny_pair, "token-fusion", weights={"tiny": 0.0})


def test_a_failing_member_is_dropped_and_the_trace_says_why(tiny_member, broken_stepper):
    result = fused([tiny_member, broken_stepper]).run(PROMPT, max_tokens=8)
    alone = tiny_member.generate(
        Ensemble([tiny_member], "single", member="tiny").request(PROMPT, max_tokens=8)
    )
    assert result.text == alone.text
    assert "no cache today" in result.trace.details["dropped"]["broken"]
    assert {c.member: c.ok for c in result.trace.calls} == {"tiny": True, "broken": False}


def test_a_member_past_its_timeout_is_dropped_and_the_others_go_on(tiny_member, tiny_model_dir):
    slow = HFMember(tiny_model_dir, name="slow", timeout_s=1e-9)
    result = fused([tiny_member, slow]).run(PROMPT, max_tokens=8)
    assert "timed out" in result.trace.details["dropped"]["slow"]
    alone = tiny_member.generate(
        Ensemble([tiny_member], "single", member="tiny").request(PROMPT, max_tokens=8)
    )
    assert result.text == alone.text


class _Unscorable(HFMember):
    def score(self, pairs):
        raise RuntimeError("scoring is down")


def test_packllm_weights_fall_back_to_uniform_when_scoring_fails(tiny_member, tiny_model_dir):
    members = [tiny_member, _Unscorable(tiny_model_dir, name="unscorable")]
    result = fused(members, weights="packllm-sim").run(PROMPT, max_tokens=4)
    assert result.trace.details["weights"] == {"tiny": 0.5, "unscorable": 0.5}
    assert "scoring is down" in result.trace.details["weights_note"]


# PackLLM weights
# ---------------------------------------------------------------------------------------------
def test_packllm_sim_favours_the_member_less_surprised_by_the_prompt(tiny_pair):
    result = fused(tiny_pair, weights="packllm-sim", tau=0.05).run(PROMPT, max_tokens=4)
    weights = result.trace.details["weights"]
    text = prompt_text(Ensemble(tiny_pair).request(PROMPT))
    perplexity = {m.name: [m.score([("", text)])[0].perplexity()] for m in tiny_pair}
    assert sum(weights.values()) == pytest.approx(1.0)
    best = min(perplexity, key=lambda name: perplexity[name][0])
    assert weights[best] == max(weights.values())


def test_packllm_opt_weights_do_not_lose_to_any_member_alone(tiny_member, merged_member):
    members = [tiny_member, merged_member]
    result = fused(members, weights="packllm-opt").run(PROMPT, max_tokens=4)
    weights = [result.trace.details["weights"][m.name] for m in members]
    assert sum(weights) == pytest.approx(1.0)
    objective = FusedPromptPerplexity(
        members,
        Mixer(member_alignment(members), "prob"),
        prompt_text(Ensemble(members).request(PROMPT)),
        lambda member, prompts: member.step_session(prompts),
    )
    assert objective(weights) <= min(objective([1.0, 0.0]), objective([0.0, 1.0])) + 1e-6


# alignment with the real tokenizers
# ---------------------------------------------------------------------------------
def _packaged_tokenizer(factory_name: str):
    from ensemble_core.members import packaged
    from ensemble_core.members.weights import converted_folder, is_converted

    try:
        member = getattr(packaged, factory_name)()
    except ModelNotFoundError as err:  # the packaged model is not installed
        pytest.skip(str(err))
    folder = converted_folder(member.folder, member.gguf_file)
    if not is_converted(folder):
        pytest.skip("the packaged model has not been converted yet (load it once)")
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def real_alignment():
    smol, gemma = _packaged_tokenizer("smollm2"), _packaged_tokenizer("gemma3")
    return align([smol, gemma], [[smol.convert_tokens_to_ids("<|im_end|>")], [gemma.eos_token_id]])


def test_token_bytes_match_what_each_tokenizer_decodes(real_alignment):
    for m, tok in enumerate(real_alignment.tokenizers):
        table = real_alignment.tables[m]
        for i in range(0, len(tok), 97):
            if i in table.special:
                continue
            try:
                text = table.data[i].decode("utf-8")
            except UnicodeDecodeError:  # part of a multi-byte character
                continue
            assert text == tok.decode([i]), (m, i)


def test_space_markers_and_byte_fallback_meet_in_one_union_token(real_alignment):
    smol, gemma = real_alignment.tokenizers
    s_id = smol.convert_tokens_to_ids("ĠParis")
    g_id = gemma.convert_tokens_to_ids("▁Paris")
    assert int(real_alignment.to_union[0][s_id]) == int(real_alignment.to_union[1][g_id])
    assert real_alignment.union_bytes[int(real_alignment.to_union[0][s_id])] == b" Paris"
    newline = smol.convert_tokens_to_ids("Ċ")
    assert real_alignment.union_bytes[int(real_alignment.to_union[0][newline])] == b"\n"
    # Gemma has "A" both as a token and as the <0x41> byte fallback: SmolLM2's "A" meets the regular token.
    a_union = int(real_alignment.to_union[0][smol.convert_tokens_to_ids("A")])
    assert real_alignment.feed(1, a_union) == [gemma.convert_tokens_to_ids("A")]


@pytest.mark.parametrize("text", [" Paris", "Hello,  wörld!\n\n\tx", "日本語のテキスト", "🙂 ok"])
def test_each_tokenizer_spells_any_text_byte_for_byte(real_alignment, text):
    for m in range(2):
        ids = real_alignment.spell(m, text.encode())
        assert real_alignment.tables[m].text_bytes(ids) == text.encode()


def test_a_partial_utf8_token_is_fed_as_byte_fallback(real_alignment):
    gemma = real_alignment.tokenizers[1]
    assert real_alignment.spell(1, b"\xc3") == [gemma.convert_tokens_to_ids("<0xC3>")]


def test_end_of_sequence_ids_share_one_union_slot_and_the_alignment_is_cached(real_alignment):
    smol, gemma = real_alignment.tokenizers
    eos = real_alignment.eos
    assert int(real_alignment.to_union[0][smol.convert_tokens_to_ids("<|im_end|>")]) in eos
    assert int(real_alignment.to_union[1][gemma.eos_token_id]) in eos
    again = align([smol, gemma], [[smol.convert_tokens_to_ids("<|im_end|>")], [gemma.eos_token_id]])
    assert again is real_alignment


async def test_a_cancelled_fusion_stops_stepping(tiny_pair):
    import asyncio

    counts = {"steps": 0}
    session_cls = type(tiny_pair[0].step_session(["x"]))
    original = session_cls.advance

    def counting(self, token_ids):
        counts["steps"] += 1
        return original(self, token_ids)

    session_cls.advance = counting
    try:
        task = asyncio.ensure_future(fused(tiny_pair).arun("hello", max_tokens=200))
        while counts["steps"] < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        settled = counts["steps"]
        await asyncio.sleep(0.3)
        assert counts["steps"] == settled < 2 * 200
    finally:
        session_cls.advance = original
