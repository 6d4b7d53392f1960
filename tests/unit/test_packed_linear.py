"""Float32 weights packed for oneDNN (`pack_weights`): the same next-token distributions and the same greedy
answer as the dense model, and a clear refusal where packing does not apply."""

from __future__ import annotations

import pytest
import torch

from ensemble_core.errors import ConfigError
from ensemble_core.members.hf import HFMember
from ensemble_core.members.hf.packed_linear import PackedLinear, pack_linears, packing_unavailable
from ensemble_core.types import Params, Request, to_messages

pytestmark = pytest.mark.skipif(
    packing_unavailable(torch.device("cpu"), torch.float32) is not None, reason="no oneDNN in this torch"
)


def test_a_packed_layer_computes_what_the_dense_one_does_for_any_leading_shape():
    torch.manual_seed(0)
    dense = torch.nn.Linear(48, 80)
    packed = PackedLinear(dense)
    for shape in [(1, 48), (1, 5, 48), (3, 7, 48)]:
        x = torch.randn(*shape)
        assert packed(x).shape == (*shape[:-1], 80)
        torch.testing.assert_close(packed(x), dense(x), rtol=1e-5, atol=1e-5)


def test_a_packed_member_gives_the_dense_member_s_distributions_and_greedy_text(tiny_model_dir, tiny_member):
    packed = HFMember(tiny_model_dir, name="tiny-packed", dtype="float32", pack_weights=True)
    assert packed.model is not tiny_member.model  # packing never touches the shared dense weights
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.model.modules())
    assert any(isinstance(m, torch.nn.Linear) for m in tiny_member.model.modules())
    request = Request(messages=to_messages("hello"), params=Params(max_tokens=16))
    assert packed.generate(request).text == tiny_member.generate(request).text
    prompt = tiny_member.format_prompt(request)
    ids = tiny_member.token_ids("a b c d e")
    dense_pass = tiny_member.step_session([prompt]).advance_positions([ids])[0]
    packed_pass = packed.step_session([prompt]).advance_positions([ids])[0]
    torch.testing.assert_close(packed_pass, dense_pass, rtol=1e-4, atol=1e-4)


def test_packing_counts_every_linear_layer():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2))
    )
    assert pack_linears(model) == 2
    assert [type(m).__name__ for m in model.modules()].count("PackedLinear") == 2


def test_packing_where_it_does_not_apply_is_refused_with_the_fix(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"packed weights are for float32.*pass pack_weights=False"):
        HFMember(tiny_model_dir, dtype="bfloat16", pack_weights=True)
