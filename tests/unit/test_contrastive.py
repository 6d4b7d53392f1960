"""Contrastive decoding with tiny random models: the mixer's arithmetic and plausibility cut, the expert's own
answer at beta 0 (same and different tokenizers), failures, configuration and the trace."""

from __future__ import annotations

import math

import pytest
import torch

from ensemble_core import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.fused_decoding import member_alignment
from ensemble_core.mixing import ContrastiveMixer
from ensemble_core.strategies import Contrastive
from tests.unit.test_token_fusion import PROMPT


def contrastive(team, **fields) -> Ensemble:
    return Ensemble(team, Contrastive(**fields))


def alone(member, max_tokens: int) -> str:
    """The member's own greedy answer to PROMPT."""
    return member.generate(
        Ensemble([member], "single", member=member.name).request(PROMPT, max_tokens=max_tokens)
    ).text


def logprobs(size: int, picks: dict[int, float]) -> torch.Tensor:
    """[1, size] log-probabilities with the given probabilities and the rest spread evenly."""
    rest = (1.0 - sum(picks.values())) / (size - len(picks))
    p = torch.full((1, size), rest)
    for token, prob in picks.items():
        p[0, token] = prob
    return p.log()


# the mixer
# -----------------------------------------------------------------------------------------------------
def test_the_contrast_chooses_among_the_experts_plausible_tokens(tiny_pair):
    alignment = member_alignment(tiny_pair)
    size = len(alignment.tables[0].data)
    a, b, c = 70, 71, 72
    expert = logprobs(size, {a: 0.5, b: 0.3, c: 0.02})  # c is under alpha = 0.1 of the top
    amateur = logprobs(size, {a: 0.6, b: 0.1, c: 1e-6})
    mixer = ContrastiveMixer(alignment, expert=1, alpha=0.1)

    def scores(beta: float) -> torch.Tensor:
        return mixer.mix([amateur, expert], [0, 1], torch.tensor([[-beta, 1.0 + beta]]))[0]

    assert int(scores(0.0).argmax()) == a
    contrasted = scores(1.0)
    assert int(contrasted.argmax()) == b  # the amateur is as sure of a as the expert, much less of b
    assert float(contrasted[b]) == pytest.approx(2 * math.log(0.3) - math.log(0.1), abs=1e-5)
    # c's contrast would be the largest of all, but the expert finds it implausible: it ranks under a and b,
    # and above the other implausible tokens, by the expert's own probability
    assert float(contrasted[c]) < float(contrasted[a]) < float(contrasted[b])
    assert float(contrasted[c]) > float(contrasted[c + 1])


def test_an_amateur_that_lacks_a_union_token_does_not_contrast_it(tiny_member, merged_member):
    alignment = member_alignment([tiny_member, merged_member])
    the = alignment.union_bytes.index(b" the")
    assert alignment.from_union[0][the] == -1  # the byte tokenizer has no " the" token
    merged_the = alignment.from_union[1][the]
    expert = logprobs(len(alignment.tables[1].data), {merged_the: 0.6})
    amateur = logprobs(len(alignment.tables[0].data), {})
    mixed = ContrastiveMixer(alignment, expert=1, alpha=0.1).mix(
        [amateur, expert], [0, 1], torch.tensor([[-2.0, 3.0]])
    )
    assert float(mixed[0, the]) == pytest.approx(math.log(0.6), abs=1e-5)
    assert int(mixed[0].argmax()) == the


# decoding
# -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expert", ["tiny", "tiny_b"])
def test_beta_zero_is_the_experts_own_greedy_answer(tiny_pair, expert):
    ens = contrastive(tiny_pair, expert=expert, beta=0.0)
    result = ens.run(PROMPT, max_tokens=24)
    alone = ens.members[expert].generate(ens.request(PROMPT, max_tokens=24))
    assert result.text == alone.text
    assert result.trace.details["agreement"][expert] == result.trace.details["fused_tokens"]


@pytest.mark.parametrize("expert", ["tiny", "merged"])
def test_beta_zero_is_the_experts_own_answer_across_tokenizers(tiny_member, merged_member, expert):
    ens = contrastive([tiny_member, merged_member], expert=expert, beta=0.0)
    request = ens.request("the hello and the other", max_tokens=32)
    alone = ens.members[expert].generate(request)
    result = ens.run("the hello and the other", max_tokens=32)
    assert result.text == alone.text
    assert result.trace.details["tokenizers"].startswith("union vocabulary")


def test_a_strong_contrast_changes_the_answer_and_the_trace_says_how(tiny_pair):
    plain = contrastive(tiny_pair, beta=0.0).run(PROMPT, max_tokens=24)
    result = contrastive(tiny_pair, beta=2.0, alpha=0.01).run(PROMPT, max_tokens=24)
    assert result.text != plain.text
    details = result.trace.details
    assert details["expert"] == "tiny_b" and details["beta"] == 2.0 and details["alpha"] == 0.01
    assert details["weights"] == pytest.approx({"tiny": -2.0, "tiny_b": 3.0})
    assert details["agreement"]["tiny_b"] < details["fused_tokens"]  # the contrast overruled the expert
    assert result.trace.chosen == "tiny_b"
    assert "contrastive decoding (tiny_b minus tiny" in result.trace.reason


def test_streamed_deltas_join_to_the_run_text(tiny_pair):
    ens = contrastive(tiny_pair, beta=1.0)
    deltas = list(ens.stream(PROMPT, max_tokens=16))
    assert deltas[-1].final and deltas[-1].trace is not None
    assert "".join(d.text for d in deltas[:-1]) == ens.run(PROMPT, max_tokens=16).text


def test_shares_split_beta_among_the_amateurs(tiny_member, tiny_pair, merged_member):
    ens = contrastive([*tiny_pair, merged_member], expert="tiny_b", beta=1.0, shares={"tiny": 3, "merged": 1})
    details = ens.run(PROMPT, max_tokens=4).trace.details
    assert details["weights"] == pytest.approx({"tiny": -0.75, "merged": -0.25, "tiny_b": 2.0})


# failures and configuration
# -----------------------------------------------------------------------------------------------------
def test_a_failing_amateur_leaves_the_expert_alone(tiny_member, broken_stepper):
    result = contrastive([broken_stepper, tiny_member], beta=1.0).run(PROMPT, max_tokens=8)
    assert result.text == alone(tiny_member, max_tokens=8)
    assert "no cache today" in result.trace.details["dropped"]["broken"]


def test_a_failing_expert_leaves_the_amateurs_fused(tiny_member, broken_stepper):
    result = contrastive([tiny_member, broken_stepper], beta=1.0).run(PROMPT, max_tokens=8)
    assert result.text == alone(tiny_member, max_tokens=8)
    assert result.trace.chosen == "tiny"


def test_the_expert_cannot_be_an_amateur_and_there_must_be_one(tiny_pair, tiny_member):
    with pytest.raises(ConfigError, match="expert must not be one of the amateurs"):
        contrastive(tiny_pair, expert="tiny", members=["tiny", "tiny_b"])
    with pytest.raises(ConfigError, match="at least one amateur"):
        contrastive([tiny_member])
    with pytest.raises(ConfigError, match="contrastive.expert: no member is named 'big'"):
        contrastive(tiny_pair, expert="big")


def test_shares_must_name_amateurs(tiny_pair):
    with pytest.raises(ConfigError, match="contrastive.shares: no amateur is named 'tiny_b'"):
        contrastive(tiny_pair, shares={"tiny_b": 1.0})
    with pytest.raises(ConfigError, match="shares must be >= 0"):
        Ensemble(tiny_pair, "contrastive", shares={"tiny": -1.0})
