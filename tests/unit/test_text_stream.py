from __future__ import annotations

from ensemble_core.members.text_stream import TextAssembler


def _assemble(pieces: list[str], stop: list[str]) -> tuple[list[str], TextAssembler]:
    """Each piece is one 'token'; decoding joins the pieces."""
    vocab = {i: p for i, p in enumerate(pieces)}
    assembler = TextAssembler(lambda ids: "".join(vocab[i] for i in ids), stop)
    deltas = [assembler.add(i) for i in range(len(pieces))]
    deltas.append(assembler.finish())
    return deltas, assembler


def test_deltas_join_to_the_text_cut_before_the_stop_string():
    deltas, assembler = _assemble(["Par", "is", "\nQue", "stion:", " more"], stop=["\nQuestion:"])
    assert assembler.stopped
    assert assembler.text == "Paris"
    assert "".join(deltas) == "Paris"


def test_a_possible_stop_prefix_is_held_back_then_released():
    deltas, assembler = _assemble(["a", "\n", "b"], stop=["\nQuestion:"])
    assert deltas[1] == ""  # "\n" could start the stop string
    assert deltas[2] == "\nb"
    assert not assembler.stopped and "".join(deltas) == "a\nb"


def test_partial_utf8_character_waits_for_the_next_token():
    raw = "é".encode()
    vocab = {0: raw[:1], 1: raw[1:]}
    assembler = TextAssembler(lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace"))
    assert assembler.add(0) == ""
    assert assembler.add(1) == "é"
