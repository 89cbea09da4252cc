"""Optimizers against their published rules (written out here in plain NumPy), against
torch.optim, and on a real problem; gradient clipping; learning-rate schedules."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim

SHAPES = [(3, 4), (5,), (2, 3, 2)]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def gradient_sequence(steps, dtype=np.float64, seed=1):
    """One list of gradients (one per parameter) per step."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
            for _ in range(steps)]


def run(optimizer, params, grads):
    for step_grads in grads:
        for param, grad in zip(params, step_grads):
            param.grad = grad.copy()
        optimizer.step()


# ---------------------------------------------------------------------- reference rules
def reference_sgd(p, grads, lr, momentum, nesterov, weight_decay):
    """SGD with momentum as PyTorch documents it (buffer starts at the first gradient)."""
    p, buf = p.copy(), None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def reference_adam(p, grads, lr, betas, eps, weight_decay, decoupled):
    """Adam as in Kingma & Ba, Algorithm 1 (bias-corrected m_hat and v_hat); AdamW decays
    the weights by lr * weight_decay outside the moments (Loshchilov & Hutter). A None
    gradient skips the step and does not count it, as in PyTorch."""
    beta1, beta2 = betas
    p, m, v, t = p.copy(), np.zeros_like(p), np.zeros_like(p), 0
    for g in grads:
        if g is None:
            continue
        t += 1
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-3, 1.0), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       nesterov=st.booleans(), weight_decay=st.sampled_from([0.0, 0.1]))
def test_sgd_follows_the_rule_step_by_step(lr, momentum, nesterov, weight_decay):
    nesterov = nesterov and momentum > 0
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = gradient_sequence(5)
    run(optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                  weight_decay=weight_decay), params, grads)
    for i, param in enumerate(params):
        expected = reference_sgd(start[i], [g[i] for g in grads], lr, momentum, nesterov,
                                 weight_decay)
        np.testing.assert_allclose(param.data, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.1), beta1=st.sampled_from([0.0, 0.8, 0.9]),
       beta2=st.sampled_from([0.9, 0.98, 0.999]), eps=st.sampled_from([1e-8, 1e-3]),
       weight_decay=st.sampled_from([0.0, 0.05]), decoupled=st.booleans())
def test_adam_and_adamw_follow_the_rule_step_by_step(lr, beta1, beta2, eps, weight_decay,
                                                      decoupled):
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = gradient_sequence(6)
    kind = optim.AdamW if decoupled else optim.Adam
    opt = kind(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    run(opt, params, grads)
    for i, param in enumerate(params):
        expected = reference_adam(start[i], [g[i] for g in grads], lr, (beta1, beta2), eps,
                                  weight_decay, decoupled)
        np.testing.assert_allclose(param.data, expected, rtol=1e-10, atol=1e-12)
        assert opt.state[i]["step"] == 6


def test_adamw_decay_is_decoupled_and_adam_decay_is_not():
    # With a zero gradient, AdamW only shrinks the weights: p * (1 - lr * wd).
    # Adam's L2 term goes through the moments instead, so it moves p by about lr.
    for kind, expected in ((optim.AdamW, lambda p: p * (1 - 0.1 * 0.5)),
                           (optim.Adam, lambda p: p - 0.1 * np.sign(p))):
        param = nn.Parameter(np.array([1.0, -2.0, 3.0]))
        start = param.data.copy()
        param.grad = np.zeros(3)
        kind([param], lr=0.1, weight_decay=0.5).step()
        np.testing.assert_allclose(param.data, expected(start), rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01),
    lambda ps: optim.AdamW(ps, lr=0.01)])
def test_parameters_without_grad_are_skipped(make):
    params = make_params()
    opt = make(params)
    frozen = params[1].data.copy()
    for step_grads in gradient_sequence(3):
        params[0].grad, params[1].grad, params[2].grad = step_grads[0], None, step_grads[2]
        opt.step()
    np.testing.assert_array_equal(params[1].data, frozen)
    assert 1 not in opt.state


def test_adam_counts_steps_per_parameter():
    # A parameter that first gets a gradient late starts its own bias correction at t=1,
    # as in PyTorch: its first update has size about lr.
    late, early = nn.Parameter(np.array([0.0])), nn.Parameter(np.array([0.0]))
    opt = optim.Adam([early, late], lr=0.1)
    for _ in range(5):
        early.grad = np.array([1.0])
        opt.step()
    late.grad = np.array([1.0])
    opt.step()
    assert opt.state[0]["step"] == 6 and opt.state[1]["step"] == 1
    np.testing.assert_allclose(late.data, [-0.1], rtol=1e-6)


@pytest.mark.parametrize("kind", [optim.SGD, optim.Adam, optim.AdamW])
def test_updates_are_in_place_and_stay_float32(kind):
    params = make_params(np.float32)
    arrays = [p.data for p in params]
    opt = kind(params, lr=np.float64(0.01), **({"momentum": 0.9} if kind is optim.SGD
                                                else {}))
    run(opt, params, gradient_sequence(3, np.float32))
    state_arrays = [id(a) for s in opt.state.values() for a in s.values()
                    if isinstance(a, np.ndarray)]
    run(opt, params, gradient_sequence(2, np.float32, seed=7))
    for param, array in zip(params, arrays):
        assert param.data is array and param.data.dtype == np.float32
    assert state_arrays == [id(a) for s in opt.state.values() for a in s.values()
                            if isinstance(a, np.ndarray)]
    assert all(a.dtype == np.float32 for s in opt.state.values() for a in s.values()
               if isinstance(a, np.ndarray))


def test_zero_grad():
    params = make_params()
    opt = optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.zero_grad(set_to_none=False)
    assert all(np.array_equal(p.grad, np.zeros(p.shape)) for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


# ---------------------------------------------------------------------- torch oracle
@pytest.mark.parametrize("name, ours, theirs", [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.05), lambda torch, ps: torch.optim.SGD(ps, lr=0.05)),
    ("sgd-nesterov", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                          weight_decay=0.01),
     lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                       weight_decay=0.01)),
    ("adam", lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
     lambda torch, ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    ("adamw", lambda ps: optim.AdamW(ps, lr=0.01, eps=1e-6, weight_decay=0.05),
     lambda torch, ps: torch.optim.AdamW(ps, lr=0.01, eps=1e-6, weight_decay=0.05))])
def test_matches_torch_optim(name, ours, theirs):
    torch = pytest.importorskip("torch")
    params = make_params(np.float32)
    torch_params = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in params]
    ours, theirs = ours(params), theirs(torch, torch_params)
    for step_grads in gradient_sequence(8, np.float32):
        for p, tp, g in zip(params, torch_params, step_grads):
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        ours.step()
        theirs.step()
        for p, tp in zip(params, torch_params):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=2e-5, atol=2e-6,
                                       err_msg=name)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params(np.float32)
    torch_params = [torch.nn.Parameter(torch.tensor(p.data)) for p in params]
    for p, tp, g in zip(params, torch_params, gradient_sequence(1, np.float32)[0]):
        p.grad, tp.grad = 3 * g, torch.tensor(3 * g)
    ours = optim.clip_grad_norm_(params, 1.5)
    theirs = torch.nn.utils.clip_grad_norm_(torch_params, 1.5)
    assert ours == pytest.approx(float(theirs), rel=1e-6)
    for p, tp in zip(params, torch_params):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------- clipping
def test_clip_grad_norm():
    params = make_params()
    grads = gradient_sequence(1)[0]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    params.append(nn.Parameter(np.ones(2)))  # no grad: skipped
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert optim.clip_grad_norm_(params, max_norm=100.0) == pytest.approx(norm)
    assert all(np.array_equal(p.grad, g) for p, g in zip(params, grads))  # below: unchanged
    assert optim.clip_grad_norm_(params, max_norm=0.5) == pytest.approx(norm)
    clipped = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params[:3]))
    assert clipped == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(params[0].grad, grads[0] * 0.5 / norm, rtol=1e-5)


def test_clip_grad_norm_nonfinite():
    param = nn.Parameter(np.ones(2))
    param.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the gradient norm is inf"):
        optim.clip_grad_norm_([param], 1.0, error_if_nonfinite=True)


# ---------------------------------------------------------------------- schedules
def test_noam_schedule_is_the_papers_formula():
    opt = optim.Adam(make_params(), lr=123.0)
    schedule = optim.NoamLR(opt, d_model=512, warmup=4000, factor=2.0)
    seen = []
    for step in range(1, 10001):
        assert opt.lr == schedule.get_lr()
        expected = 2.0 * 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert opt.lr == pytest.approx(expected, rel=1e-12)
        seen.append(opt.lr)
        schedule.step()
    peak = int(np.argmax(seen)) + 1
    assert peak == 4000
    assert seen[peak - 1] == pytest.approx(2.0 / math.sqrt(512 * 4000))


def test_cosine_schedule():
    opt = optim.SGD(make_params(), lr=0.1)
    schedule = optim.CosineLR(opt, warmup=10, total=110, min_lr=0.01)
    lrs = [opt.lr] + [schedule.step() for _ in range(149)]  # lrs[k] is for step k + 1
    np.testing.assert_allclose(lrs[:10], 0.1 * np.arange(1, 11) / 10)  # linear warm-up
    assert lrs[59] == pytest.approx(0.055)                      # half-way: the mean
    assert lrs[109] == pytest.approx(0.01) and lrs[149] == pytest.approx(0.01)
    assert np.all(np.diff(lrs[9:]) <= 0)                        # never rises after warm-up
    progress = (np.arange(11, 111) - 10) / 100
    np.testing.assert_allclose(lrs[10:110], 0.01 + 0.045 * (1 + np.cos(np.pi * progress)))


@pytest.mark.parametrize("make", [lambda opt: optim.NoamLR(opt, d_model=64, warmup=20),
                                  lambda opt: optim.CosineLR(opt, warmup=5, total=50)])
def test_schedule_state_dict_resumes(make):
    opt = optim.Adam(make_params(), lr=0.01)
    schedule = make(opt)
    for _ in range(30):
        schedule.step()
    state = schedule.state_dict()
    fresh_opt = optim.Adam(make_params(), lr=0.01)
    fresh = make(fresh_opt)
    fresh.load_state_dict(state)
    assert fresh_opt.lr == opt.lr and fresh.get_lr() == schedule.get_lr()
    assert [fresh.step() for _ in range(5)] == [schedule.step() for _ in range(5)]
    with pytest.raises(ValueError, match="load_state_dict: expected a .* state_dict"):
        fresh.load_state_dict({"schedule": "Other"})


# ---------------------------------------------------------------------- state_dict
def test_optimizer_state_dict_is_a_copy_and_round_trips():
    params = make_params()
    opt = optim.AdamW(params, lr=0.01, betas=(0.8, 0.95))
    run(opt, params, gradient_sequence(3))
    state = opt.state_dict()
    assert state["hyper"] == {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-8,
                              "weight_decay": 0.01}
    assert state["state"]["0"]["step"] == 3
    before = state["state"]["0"]["exp_avg"].copy()
    run(opt, params, gradient_sequence(1))
    np.testing.assert_array_equal(state["state"]["0"]["exp_avg"], before)
    other = optim.AdamW(make_params(), lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.01 and other.betas == (0.8, 0.95) and other.state[0]["step"] == 3


def test_optimizer_load_state_dict_lists_every_problem():
    opt = optim.Adam(make_params(), lr=0.01)
    params = make_params()
    run(opt, opt.params, gradient_sequence(1))
    state = opt.state_dict()
    state["optimizer"] = "SGD"
    state["state"]["0"]["exp_avg"] = np.zeros((4, 3))
    state["state"]["7"] = {"step": 1}
    state["param_groups"][0]["betas"] = (0.9, 1.5)
    with pytest.raises(ValueError) as error:
        optim.Adam(params, lr=0.01).load_state_dict(state)
    message = str(error.value)
    for part in ["4 problem(s), nothing was loaded", "saved by 'SGD'", "betas[1]",
                 "parameter 0 'exp_avg': saved shape (4, 3), parameter shape (3, 4)",
                 "state for parameter '7', which does not exist"]:
        assert part in message
    with pytest.raises(ValueError, match="it has 3 parameters, this optimizer has 1"):
        optim.Adam(params[:1]).load_state_dict(opt.state_dict())


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, kind, message", [
    (lambda ps: optim.SGD(ps, lr=-0.1), ValueError, "SGD: lr must be >= 0.0, got -0.1"),
    (lambda ps: optim.SGD(ps, lr=float("nan")), ValueError, "SGD: lr must be >= 0.0, got nan"),
    (lambda ps: optim.SGD(ps, lr="fast"), TypeError, "SGD: lr must be a number, got 'fast'"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), ValueError, "momentum must be >= 0"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), ValueError,
     "nesterov=True needs momentum > 0"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), ValueError, "weight_decay must be"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), ValueError,
     r"Adam: betas\[1\] must be in \[0.0, 1.0\), got 1.0"),
    (lambda ps: optim.AdamW(ps, betas=(-0.1, 0.9)), ValueError, r"AdamW: betas\[0\]"),
    (lambda ps: optim.Adam(ps, betas=0.9), TypeError, "betas must be a pair"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), ValueError, "eps must be >= 0"),
    (lambda ps: optim.Adam([]), ValueError, "Adam: got an empty parameter list"),
    (lambda ps: optim.Adam(nn.Linear(2, 2)), TypeError, r"Pass model.parameters\(\)"),
    (lambda ps: optim.Adam([ps[0], ps[0]]), ValueError, "parameter 1 appears more than once"),
    (lambda ps: optim.Adam([np.ones(2)]), TypeError, "parameter 0 is a ndarray, not a Tensor"),
    (lambda ps: optim.Adam([mt.tensor([1, 2])]), TypeError, "dtype int64"),
    (lambda ps: optim.NoamLR(optim.SGD(ps, lr=1), d_model=0, warmup=10), ValueError,
     "NoamLR: d_model must be a positive integer, got 0"),
    (lambda ps: optim.NoamLR(optim.SGD(ps, lr=1), d_model=8, warmup=-1), ValueError,
     "warmup must be a positive integer"),
    (lambda ps: optim.CosineLR(optim.SGD(ps, lr=1), warmup=10, total=10), ValueError,
     r"CosineLR: total \(10\) must be larger than warmup \(10\)"),
    (lambda ps: optim.CosineLR(optim.SGD(ps, lr=1), warmup=0, total=10, min_lr=2.0),
     ValueError, r"min_lr must be in \[0.0, 1.0\]"),
    (lambda ps: optim.CosineLR("adam", warmup=0, total=10), TypeError, "expected an optimizer"),
    (lambda ps: optim.clip_grad_norm_(ps, -1.0), ValueError, "max_norm must be >= 0"),
])
def test_bad_input_is_refused_clearly(make, kind, message):
    with pytest.raises(kind, match=message):
        make(make_params())


# ---------------------------------------------------------------------- a real problem
def two_spirals(n=200, seed=0):
    """Two interleaved spirals of two turns each, n points in all, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    angle = np.sqrt(rng.uniform(0, 1, n // 2)) * 4 * np.pi
    arm = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1) / (4 * np.pi)
    points = np.concatenate([arm, -arm]) + 0.03 * rng.standard_normal((n, 2))
    labels = np.repeat(np.array([0, 1]), n // 2)
    return points.astype(np.float32), labels


def train(model, opt, x, y, steps):
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float((model(x).data.argmax(axis=1) == y).mean())


def test_mlp_learns_two_spirals():
    x, y = two_spirals()
    mt.manual_seed(0)
    linear = nn.Linear(2, 2)  # the classes are not linearly separable...
    assert train(linear, optim.Adam(linear.parameters(), lr=0.05), mt.tensor(x), y, 300) < 0.8
    mlp = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 2))  # ...but an MLP separates them
    accuracy = train(mlp, optim.AdamW(mlp.parameters(), lr=0.01, weight_decay=1e-4),
                     mt.tensor(x), y, 400)
    assert accuracy >= 0.98


def test_sgd_with_momentum_also_learns_two_spirals():
    x, y = two_spirals()
    mt.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 2))
    opt = optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    assert train(mlp, opt, mt.tensor(x), y, 700) >= 0.98
