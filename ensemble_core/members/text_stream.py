"""Incremental detokenisation with stop strings: turns token ids into text deltas that never show a partial
UTF-8 character or the beginning of a stop string, and says when a stop string has been reached."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class TextAssembler:
    """Feed generated token ids one at a time; read back the text that is safe to show.

    The streamed deltas concatenate to exactly `text` (the full decoded output cut before the first stop
    string), so a streamed answer and a non-streamed one are the same text.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = (), context: str = ""):
        """`context` is the text just before the first token (an answer's prefill): a stop string that begins
        there and ends in the new text still stops it, e.g. "\nQuestion:" after a prefill ending in a
        newline."""
        self._decode = decode
        self._stop = [s for s in stop if s]
        longest = max((len(s) for s in self._stop), default=1)
        self._context = context[len(context) - longest + 1 :] if longest > 1 else ""
        self._ids: list[int] = []
        self._emitted = 0
        self.text = ""
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add one id; return the newly safe text (possibly empty)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        full = self._decode(self._ids)
        seen = self._context + full
        cut = _first_stop(seen, self._stop, after=len(self._context))
        if cut is not None:
            self.stopped = True
            self.text = full[: max(0, cut - len(self._context))]
            return self._emit(self.text)
        self.text = full
        safe = full[: len(full) - min(len(full), _held_back(seen, self._stop))]
        if safe.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            safe = safe.rstrip("\ufffd")
        return self._emit(safe)

    def finish(self) -> str:
        """The remaining text once generation ends (what was held back as a possible stop prefix)."""
        return self._emit(self.text)

    def _emit(self, upto: str) -> str:
        if len(upto) <= self._emitted:
            return ""
        delta = upto[self._emitted :]
        self._emitted = len(upto)
        return delta


def _first_stop(text: str, stop: Sequence[str], after: int = 0) -> int | None:
    """Where the first stop string begins, counting only those that end beyond `after` (the context)."""
    positions = [i for i in (text.find(s, max(0, after - len(s) + 1)) for s in stop) if i >= 0]
    return min(positions) if positions else None


def _held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
