"""Int8 weights (`quantization="int8"`): a layer within int8 rounding of the bfloat16 one, a member whose
distributions stay close to bfloat16's, a drafter that leaves the verifier's answer unchanged, and a clear
refusal where int8 does not apply. (A narrowed int8 output layer: tests/unit/test_speculative.py.)"""

from __future__ import annotations

import pytest
import torch

from ensemble_core import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.members.hf import HFMember
from ensemble_core.members.hf.int8_linear import Int8Linear, int8_unavailable, quantize_linears
from ensemble_core.types import Params, Request, to_messages

pytestmark = pytest.mark.skipif(
    int8_unavailable("int8", torch.device("cpu"), torch.bfloat16) is not None,
    reason="no int8 kernel in this torch",
)


@pytest.fixture(scope="module")
def int8_member(tiny_model_dir):
    return HFMember(tiny_model_dir, name="tiny-int8", dtype="bfloat16", quantization="int8")


@pytest.fixture(scope="module")
def bf16_member(tiny_model_dir):
    return HFMember(tiny_model_dir, name="tiny-bf16", dtype="bfloat16")


def test_an_int8_layer_is_within_rounding_of_the_float_one_for_any_leading_shape():
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 96)
    layer = Int8Linear.quantize(dense.bfloat16())
    assert layer.weight.dtype == torch.int8 and layer.weight.abs().max() == 127
    reference = torch.nn.functional.linear
    for shape in [(1, 64), (1, 5, 64), (3, 7, 64)]:
        x = torch.randn(*shape, dtype=torch.bfloat16)
        assert layer(x).shape == (*shape[:-1], 96)
        exact = reference(x.float(), dense.weight.float(), dense.bias.float())
        # one weight step is max|w|/127 per row; over 64 inputs the error stays a small share of the output
        assert (layer(x).float() - exact).norm() / exact.norm() < 0.02


def test_the_rows_of_an_int8_layer_compute_those_outputs():
    torch.manual_seed(1)
    layer = Int8Linear.quantize(torch.nn.Linear(32, 50).bfloat16())
    x = torch.randn(2, 32, dtype=torch.bfloat16)
    index = torch.tensor([3, 17, 49])
    torch.testing.assert_close(layer.rows(index)(x), layer(x)[:, index])
    torch.testing.assert_close(layer.rows(slice(0, 10))(x), layer(x)[:, :10])


def test_quantizing_counts_every_linear_layer():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    )
    assert quantize_linears(model) == 2
    assert [type(m).__name__ for m in model.modules()].count("Int8Linear") == 2


def test_an_int8_member_keeps_the_bfloat16_member_s_distributions_close(int8_member, bf16_member):
    assert int8_member.model is not bf16_member.model  # quantizing never touches the shared weights
    assert not any(isinstance(m, torch.nn.Linear) for m in int8_member.model.modules())
    prompt = bf16_member.format_prompt(Request(messages=to_messages("hello"), params=Params(max_tokens=4)))
    ids = bf16_member.token_ids("a b c d e")
    full = bf16_member.step_session([prompt]).advance_positions([ids])[0].exp()
    quantized = int8_member.step_session([prompt]).advance_positions([ids])[0].exp()
    total_variation = (full - quantized).abs().sum(-1) / 2
    assert total_variation.max() < 0.05, total_variation


def test_an_int8_drafter_leaves_the_verifier_s_greedy_answer_unchanged(int8_member, tiny_member):
    members = [int8_member, tiny_member]  # a float32 verifier: one pass over a draft rounds as its steps do
    ens = Ensemble(
        members, "speculative", drafter="tiny-int8", verifier="tiny", draft_tokens=4, draft_vocab=256
    )
    alone = Ensemble([tiny_member], "single", member=tiny_member.name)
    for prompt in ["hello there", "the hello and the other"]:
        result = ens.run(prompt, max_tokens=30)
        assert result.text == alone.run(prompt, max_tokens=30).text
        assert result.trace.details["drafter"] == "tiny-int8"
        assert result.trace.details["accepted"] > 0


def test_int8_where_it_does_not_apply_is_refused_with_the_fix(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"int8 weights take bfloat16 inputs.*pass quantization=None"):
        HFMember(tiny_model_dir, dtype="float32", quantization="int8")
    with pytest.raises(ConfigError, match=r"quantization 'int4' is not offered \(only 'int8'\)"):
        HFMember(tiny_model_dir, dtype="bfloat16", quantization="int4")  # type: ignore[arg-type]
