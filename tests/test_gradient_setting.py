"""GradientSetting (one home for parsing, validating and naming a gradient setting) and attention.attend (the one
place a setting becomes a kernel call), checked against the float64 brute forces."""

import pytest
import torch
from test_masked_attention import brute_force as masked_brute_force

from myopia.arms import GRADIENTS, GradientSetting
from myopia.attention import attend
from myopia.errors import MyopiaError
from myopia.masked_attention import AttentionStructure
from myopia.model import GPTConfig
from myopia.testing import attention_brute_force, attention_brute_force_past

B, H, H_KV, T, D = 2, 4, 2, 9, 6
SCALE = D**-0.5


@pytest.mark.parametrize("name", ["vanilla", "bigram", "myopic", "myopic-hidden", "myopic-beta0.5",
                                  "myopic-horizon8", "myopic-hidden-horizon8", "myopic-hidden-horizon2-beta0.25"])
def test_a_name_parses_to_the_setting_it_names(name):
    setting = GradientSetting.parse(name)
    assert setting.name == name and GradientSetting.parse(setting.name) == setting
    assert GradientSetting.from_dict(setting.to_dict()) == setting
    assert set(setting.to_dict()) == {"gradient", "beta", "horizon"}  # the flat keys configs store


def test_parse_reads_the_knobs():
    assert GradientSetting.parse("myopic-hidden-horizon8") == GradientSetting("myopic-hidden", 0.0, 8)
    assert GradientSetting.parse(" myopic-beta0.5 ") == GradientSetting("myopic", 0.5, 0)
    assert GradientSetting("myopic", 1, 0).beta == 1.0 and isinstance(GradientSetting("myopic", 1).beta, float)
    assert GradientSetting("myopic-hidden").hidden and not GradientSetting("myopic").hidden
    assert tuple(GradientSetting(g).kind for g in GRADIENTS) == GRADIENTS


@pytest.mark.parametrize("args, message", [
    (("sideways",), "gradient must be one of"),
    (("myopic", 1.5), r"beta must lie in \[0, 1\]"),
    (("myopic", True), r"beta must lie in \[0, 1\]"),
    (("myopic", "0.5"), r"beta must lie in \[0, 1\]"),
    (("myopic", 0.0, -1), "horizon must be an integer >= 0"),
    (("myopic", 0.0, 2.0), "horizon must be an integer >= 0"),
])
def test_a_bad_setting_is_one_line_wherever_it_comes_from(args, message):
    with pytest.raises(MyopiaError, match=message):
        GradientSetting(*args)
    fields = dict(zip(("gradient", "beta", "horizon"), args))
    with pytest.raises(MyopiaError, match=message):
        GPTConfig(**fields)
    with pytest.raises(MyopiaError, match=message):
        GradientSetting.from_dict(fields)


@pytest.mark.parametrize("name", ["myopic-gamma2", "myopic-beta2", "myopic-horizon1.5", "hidden", ""])
def test_an_unknown_or_impossible_name_is_refused(name):
    with pytest.raises(MyopiaError) as exc:
        GradientSetting.parse(name)
    assert "\n" not in str(exc.value)


def test_configs_hold_the_flat_fields_and_produce_the_setting():
    cfg = GPTConfig(gradient="myopic-hidden", beta=0.25, horizon=3)
    assert cfg.setting == GradientSetting("myopic-hidden", 0.25, 3)
    other = cfg.with_setting(GradientSetting("myopic", horizon=1))
    assert (other.gradient, other.beta, other.horizon) == ("myopic", 0.0, 1) and cfg.horizon == 3
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    s = GradientSetting("myopic", 0.5, 2)
    assert s.switch("myopic-hidden") == GradientSetting("myopic-hidden", 0.5, 2)
    assert s.switch("myopic", horizon=0) == GradientSetting("myopic", 0.5, 0) and s.switch(cfg.setting) == cfg.setting


# --------------------------------------------------------------------------------------------------------------
# attend: each setting, plain and masked, given past, hidden-state copies - against the float64 brute forces
# --------------------------------------------------------------------------------------------------------------


def _t(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                       requires_grad=True)


def _grads(total, inputs):
    return torch.autograd.grad(total, inputs, allow_unused=True)


def _close(got, want):
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["vanilla", "myopic", "myopic-hidden", "myopic-horizon2-beta0.25"])
def test_attend_plain_with_grouped_heads_matches_the_brute_force(name):
    setting = GradientSetting.parse(name)
    q, k, v, g = _t(B, H, T, D, seed=1), _t(B, H_KV, T, D, seed=2), _t(B, H_KV, T, D, seed=3), _t(B, H, T, D, seed=4)
    got = _grads((attend(q, k, v, setting, scale=SCALE) * g).sum(), (q, k, v))
    horizon, beta = (T, 1.0) if setting.kind == "vanilla" else (setting.horizon, setting.beta)
    _close(got, _grads(attention_brute_force(q, k, v, g, horizon, beta, SCALE), (q, k, v)))


def test_attend_hidden_copies_get_full_and_myopic_gradients():
    setting = GradientSetting("myopic-hidden", 0.25, 1)
    q, g = _t(B, H, T, D, seed=1), _t(B, H, T, D, seed=4)
    k_w, v_w = _t(B, H_KV, T, D, seed=2), _t(B, H_KV, T, D, seed=3)
    k_x, v_x = (t.detach().clone().requires_grad_() for t in (k_w, v_w))
    out = attend(q, k_w, v_w, setting, split=(k_x, v_x), scale=SCALE)
    got = _grads((out * g).sum(), (q, k_w, v_w, k_x, v_x))
    full = _grads(attention_brute_force(q, k_w, v_w, g, T, 1.0, SCALE), (q, k_w, v_w))
    myopic = _grads(attention_brute_force(q, k_x, v_x, g, 1, 0.25, SCALE), (k_x, v_x))
    _close(got, (*full, *myopic))


def test_attend_given_past_and_bigram_match_their_definitions():
    q, k, v, g = _t(B, H, T, D, seed=1), _t(B, H_KV, T, D, seed=2), _t(B, H_KV, T, D, seed=3), _t(B, H, T, D, seed=4)
    pk, pv = _t(B, H_KV, T, D, seed=5), _t(B, H_KV, T, D, seed=6)
    got = _grads((attend(q, k, v, GradientSetting("myopic"), past=(pk, pv), scale=SCALE) * g).sum(), (q, k, v))
    _close(got, _grads(attention_brute_force_past(q, k, v, pk, pv, g, SCALE), (q, k, v)))
    # bigram: query i sees i zero keys/values and itself
    out = attend(q, k, v, GradientSetting("bigram"), scale=SCALE)
    kk, vv = (t.repeat_interleave(H // H_KV, dim=1) for t in (k, v))
    for i in range(T):
        s = torch.cat([torch.zeros(B, H, i, dtype=q.dtype), SCALE * (q[..., i, :] * kk[..., i, :]).sum(-1, True)], -1)
        want = torch.softmax(s, -1)[..., -1:] * vv[..., i, :]
        torch.testing.assert_close(out[..., i, :], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["vanilla", "myopic-horizon1-beta0.3", "myopic-hidden"])
def test_attend_masked_matches_the_brute_force(name):
    setting = GradientSetting.parse(name)
    st = AttentionStructure(doc_ids=torch.tensor([[0] * 4 + [1] * 5, [7] * 6 + [3] * 3]), window=4)
    q, k, v, g = (_t(B, H, T, D, seed=s) for s in (1, 2, 3, 4))
    horizon, beta = (T, 1.0) if setting.kind == "vanilla" else (setting.horizon, setting.beta)
    if setting.hidden:
        k_x, v_x = (t.detach().clone().requires_grad_() for t in (k, v))
        out = attend(q, k, v, setting, structure=st, split=(k_x, v_x), scale=SCALE)
        inputs = (q, k, v, k_x, v_x)
        want = masked_brute_force(q, k_x, v_x, g, st, horizon, beta, SCALE, k_full=k, v_full=v)
        _close(_grads((out * g).sum(), inputs), _grads(want, inputs))
        return
    out = attend(q, k, v, setting, structure=st, scale=SCALE)
    _close(_grads((out * g).sum(), (q, k, v)), _grads(masked_brute_force(q, k, v, g, st, horizon, beta, SCALE),
                                                      (q, k, v)))


def test_attend_refuses_what_no_kernel_does():
    q = k = v = torch.zeros(1, 2, 4, 4)
    with pytest.raises(MyopiaError, match="split"):
        attend(q, k, v, GradientSetting("myopic"), split=(k, v))
    with pytest.raises(MyopiaError, match="score bias needs a mask structure"):
        attend(q, k, v, GradientSetting("myopic"), bias=torch.zeros(1, 1, 4, 4))
    with pytest.raises(MyopiaError, match="document ids"):
        attend(q, k, v, GradientSetting("bigram"), structure=AttentionStructure(window=2))
