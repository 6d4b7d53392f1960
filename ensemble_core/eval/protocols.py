"""How each strategy is evaluated on each kind of item (`PROTOCOL_TEXT` heads every report).

Multiple-choice sets (the standard log-likelihood protocol of lm-evaluation-harness):
- "loglik": a single member picks the choice it gives the highest length-normalised log-likelihood;
  `choice-ensemble` combines every member's choice scores.
- "routed": a router (a strategy with `aroute`) picks a member from the question alone, and that member's
  log-likelihood answer counts (RouterBench's protocol: a router is as good as the members it picks).
- "generate": any other strategy (fallback, vote, cascade, fusion, ...) answers the question with its
  choices lettered; the letter (or the one choice text) in the answer counts, anything else is wrong. Its
  baselines are the single members under the same protocol, added automatically.
Short-answer sets: every strategy generates; exact / numeric / first-word match."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ensemble_core.eval.items import AnswerItem, ChoiceItem, Item
from ensemble_core.eval.specs import CHOICE_ENSEMBLE, StrategySpec
from ensemble_core.strategies.registry import strategy_class
from ensemble_core.strategies.routing import Router
from ensemble_core.types import Message, Params, Request

PROTOCOL_TEXT = (
    "Protocol. Multiple choice: *loglik* = a member picks the choice with the highest length-normalised "
    "log-likelihood (lm-evaluation-harness style), choice-ensemble sums the members' normalised choice "
    "scores "
    "with weights; *routed* = a router picks a member from the question alone and that member's loglik "
    "answer "
    "counts (RouterBench style); *generate* = the strategy answers the question with lettered choices and "
    "the "
    "letter (or the one choice text) it names counts, anything else is wrong; its baselines are the single "
    "members under the same protocol. Short answer: generation, exact / numeric / first-word match."
)

Protocol = Literal["loglik", "routed", "generate"]
GENERATE_SUFFIX = " (generate)"
_LETTERS = "ABCDEFGHIJ"


class Target(BaseModel):
    """A strategy spec and the protocol it is evaluated by."""

    model_config = ConfigDict(extra="forbid")

    spec: StrategySpec
    protocol: Protocol

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def is_single(self) -> bool:
        return self.spec.name == "single"


def is_router(name: str) -> bool:
    return issubclass(strategy_class(name), Router)


def plan(
    specs: list[StrategySpec], kind: str, member_names: list[str], mc_protocol: str = "auto"
) -> tuple[list[Target], list[str]]:
    """The targets to run and notes on any spec that does not apply to this kind of set."""
    targets: list[Target] = []
    notes: list[str] = []
    if kind == "answer" or mc_protocol == "generate":
        for spec in specs:
            if spec.name == CHOICE_ENSEMBLE:
                notes.append(
                    f"{spec.label}: not applicable "
                    f"({'short-answer set' if kind == 'answer' else 'generate protocol'})"
                )
                continue
            targets.append(Target(spec=spec, protocol="generate"))
        return targets, notes
    for spec in specs:
        if spec.name in ("single", CHOICE_ENSEMBLE):
            targets.append(Target(spec=spec, protocol="loglik"))
        elif is_router(spec.name):
            targets.append(Target(spec=spec, protocol="routed"))
        else:
            targets.append(Target(spec=spec, protocol="generate"))
    if any(t.protocol == "generate" for t in targets):
        for name in member_names:
            label = f"single:{name}{GENERATE_SUFFIX}"
            spec = StrategySpec(label=label, name="single", params={"member": name})
            targets.append(Target(spec=spec, protocol="generate"))
        notes.append(
            "generating strategies are compared with the single members under the same generate protocol"
        )
    return targets, notes


def choice_prompt(item: ChoiceItem) -> str:
    """The question with its choices lettered, as a generating strategy sees it."""
    options = "\n".join(f"{_LETTERS[k]}. {c}" for k, c in enumerate(item.choices))
    return f"{item.question}\n{options}\nAnswer with the letter of the correct choice."


SHORT_ANSWER_HINT = "Answer with the answer alone, in as few words as possible."


def request_for(item: Item, max_tokens: int, seed: int) -> Request:
    """The request a generating strategy answers: a multiple-choice question with lettered choices, or a
    short-answer question with a system hint to answer in a few words (as a short-answer benchmark wants)."""
    if isinstance(item, ChoiceItem):
        messages = [Message(role="user", content=choice_prompt(item))]
    elif item.match == "exact":
        messages = [
            Message(role="system", content=SHORT_ANSWER_HINT),
            Message(role="user", content=item.question),
        ]
    else:
        messages = [Message(role="user", content=item.question)]
    return Request(messages=messages, params=Params(max_tokens=max_tokens, temperature=0.0, seed=seed))


def default_max_tokens(item: Item) -> int:
    """Enough for a letter, a word, a short answer or a worked solution."""
    if isinstance(item, ChoiceItem):
        return 8
    assert isinstance(item, AnswerItem)
    return {"first-word": 6, "exact": 24, "numeric": 256}[item.match]
