"""Evaluation items: a multiple-choice question (scored per choice) or a short-answer question (generated and
matched). Pydantic models, so a user's own JSONL validates with errors that name the field."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AnswerMatch = Literal["exact", "numeric", "first-word"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="stable id within its data set (the resume cache is keyed by it)")
    question: str = Field(description="the text a model is asked (chat message / routing input)")


class ChoiceItem(_Item):
    """Pick one of `choices`. Scored as log P(choice | prompt) per choice; or, Winogrande-style, with one
    context per choice (`contexts`) and the shared `continuation` scored after each."""

    kind: Literal["choice"] = "choice"
    choices: list[str] = Field(min_length=2)
    gold: int = Field(ge=0)
    prompt: str = Field(
        default="", description="the scoring prompt; each choice is scored after it (with a space)"
    )
    contexts: list[str] | None = Field(
        default=None, description="Winogrande-style: one scoring prompt per choice"
    )
    continuation: str | None = Field(
        default=None, description="Winogrande-style: the text scored after each context"
    )

    @model_validator(mode="after")
    def _check(self) -> ChoiceItem:
        if self.gold >= len(self.choices):
            raise ValueError(
                f"gold is {self.gold} but there are only {len(self.choices)} choices (0-based index)"
            )
        if (self.contexts is None) != (self.continuation is None):
            raise ValueError("Winogrande-style items need both contexts and continuation")
        if self.contexts is not None and len(self.contexts) != len(self.choices):
            raise ValueError("give one context per choice")
        return self

    def groups(self) -> list[tuple[str, list[str]]]:
        """(prompt, continuations) groups to score, in choice order: one group sharing the prompt, or one
        group per choice for Winogrande-style items. Continuations start with a space (the word boundary)."""
        if self.contexts is not None and self.continuation is not None:
            return [(context, [" " + self.continuation.lstrip()]) for context in self.contexts]
        return [(self.prompt or self.question, [" " + c.lstrip() for c in self.choices])]

    def scored_texts(self) -> list[str]:
        """The text whose length normalises each choice's log-likelihood."""
        return [c for _, conts in self.groups() for c in conts]


class AnswerItem(_Item):
    """Generate an answer; correct when it matches one of `answers` the way `match` says."""

    kind: Literal["answer"] = "answer"
    answers: list[str] = Field(min_length=1)
    match: AnswerMatch = "exact"


Item = ChoiceItem | AnswerItem
