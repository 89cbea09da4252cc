"""Adam, AdamW and SGD over flat buffers (optim/flat.py) against the textbook
per-parameter update (`flat=False`), a plain NumPy formula and torch.optim: over several steps, with
parameter groups, gradients that are None in some steps, weight decay, float32 and
float64. Then what must survive the flat buffers: gradients landing in them through
backward, zero_grad, loading the model's and the optimizer's state (in place),
checkpoints, a rebound `param.data`, shared parameters, mixed dtypes and schedules."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_optim import reference_adam
from test_param_groups import train_steps

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim

SHAPES = [(3, 4), (5,), (2, 3, 2), (4,)]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def grouped(params, lr=0.01, weight_decay=0.05):
    """Two groups: the first two parameters with the defaults, the rest with their own
    lr and no weight decay."""
    return [{"params": params[:2]}, {"params": params[2:], "lr": lr / 3, "weight_decay": 0.0}]


def gradient_steps(steps, dtype, missing=(), seed=1):
    """One list of gradients per step; (step, k) in `missing` gives parameter k no
    gradient in that step."""
    rng = np.random.default_rng(seed)
    return [[None if (t, k) in missing else rng.standard_normal(shape).astype(dtype)
             for k, shape in enumerate(SHAPES)] for t in range(steps)]


def run(optimizer, params, grads):
    for step_grads in grads:
        for param, grad in zip(params, step_grads):
            param.grad = None if grad is None else grad.copy()
        optimizer.step()


MISSING = {(2, 1), (3, 1), (3, 3)}   # parameter 1 sits out steps 2 and 3, parameter 3 step 3


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["Adam", "AdamW"]), dtype=st.sampled_from([np.float32, np.float64]),
       weight_decay=st.sampled_from([0.0, 0.05]), groups=st.booleans(),
       missing=st.sampled_from([(), MISSING]), lr=st.floats(1e-3, 0.1),
       block_size=st.sampled_from([1, 6, 1 << 16]))
def test_flat_equals_per_parameter_to_the_last_bit(kind, dtype, weight_decay, groups,
                                                   missing, lr, block_size):
    # block_size: the flat arrays stepped in blocks of one parameter, of a few, or whole
    flat_params, textbook_params = make_params(dtype), make_params(dtype)

    def make(params, flat):
        where = grouped(params, lr, weight_decay) if groups else params
        return getattr(optim, kind)(where, lr=lr, weight_decay=weight_decay, flat=flat)
    flat, textbook = make(flat_params, True), make(textbook_params, False)
    for step_grads in gradient_steps(7, dtype, missing):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(optim.flat, "BLOCK_SIZE", block_size)   # read as buffers are made
            run(flat, flat_params, [step_grads])
        run(textbook, textbook_params, [step_grads])
        for p, q in zip(flat_params, textbook_params):
            np.testing.assert_array_equal(p.data, q.data)
            assert p.dtype == dtype
    assert {i: s["step"] for i, s in flat.state.items()} == \
        {i: s["step"] for i, s in textbook.state.items()}
    for i, entry in textbook.state.items():
        np.testing.assert_array_equal(flat.state[i]["exp_avg_sq"], entry["exp_avg_sq"])


@settings(max_examples=20, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), weight_decay=st.sampled_from([0.0, 0.1]),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans(), groups=st.booleans(),
       missing=st.sampled_from([(), MISSING]), block_size=st.sampled_from([1, 6, 1 << 16]))
def test_flat_sgd_equals_per_parameter(dtype, weight_decay, momentum, nesterov, groups,
                                       missing, block_size):
    nesterov = nesterov and momentum > 0
    flat_params, textbook_params = make_params(dtype), make_params(dtype)

    def make(params, flat):
        where = grouped(params, 0.1, weight_decay) if groups else params
        return optim.SGD(where, lr=0.1, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, flat=flat)
    flat, textbook = make(flat_params, True), make(textbook_params, False)
    for step_grads in gradient_steps(6, dtype, missing):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(optim.flat, "BLOCK_SIZE", block_size)   # read as buffers are made
            run(flat, flat_params, [step_grads])
        run(textbook, textbook_params, [step_grads])
        for p, q in zip(flat_params, textbook_params):
            np.testing.assert_array_equal(p.data, q.data)
    assert flat.state.keys() == textbook.state.keys()
    for i, entry in textbook.state.items():
        np.testing.assert_array_equal(flat.state[i]["momentum_buffer"], entry["momentum_buffer"])


def test_flat_sgd_matches_torch_optim():
    torch = pytest.importorskip("torch")
    params = make_params(np.float32)
    torch_params = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in params]
    ours = optim.SGD(grouped(params, 0.1), lr=0.1, momentum=0.9, nesterov=True,
                     weight_decay=0.05)
    theirs = torch.optim.SGD(grouped(torch_params, 0.1), lr=0.1, momentum=0.9, nesterov=True,
                             weight_decay=0.05)
    for step_grads in gradient_steps(8, np.float32, MISSING):
        for p, tp, g in zip(params, torch_params, step_grads):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        ours.step()
        theirs.step()
        for p, tp in zip(params, torch_params):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
@pytest.mark.parametrize("missing", [(), MISSING])
def test_flat_follows_the_numpy_formula(kind, missing):
    params = make_params(np.float64)
    start = [p.data.copy() for p in params]
    grads = gradient_steps(6, np.float64, missing)
    run(getattr(optim, kind)(params, lr=0.02, betas=(0.8, 0.99), weight_decay=0.1), params,
        grads)
    for k, param in enumerate(params):
        expected = reference_adam(start[k], [g[k] for g in grads], 0.02, (0.8, 0.99), 1e-8, 0.1,
                              decoupled=kind == "AdamW")
        np.testing.assert_allclose(param.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_matches_torch_optim_with_groups_and_missing_grads(kind, dtype):
    torch = pytest.importorskip("torch")
    params = make_params(dtype)
    torch_params = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in params]
    ours = getattr(optim, kind)(grouped(params), lr=0.01, weight_decay=0.05)
    theirs = getattr(torch.optim, kind)(grouped(torch_params), lr=0.01, weight_decay=0.05)
    tolerance = {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12}
    for step_grads in gradient_steps(8, dtype, MISSING):
        for p, tp, g in zip(params, torch_params, step_grads):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        ours.step()
        theirs.step()
        for p, tp in zip(params, torch_params):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance)


# ---------------------------------------------------------------------- in training
def make_model(dtype=np.float32):
    mt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    for param in model.parameters():
        param.data = param.data.astype(dtype)
    return model


def flat_buffers(opt):
    return [buffers for every_buffers, _ in opt._flat_buffers.values()
            for buffers in every_buffers]


def test_backward_writes_into_the_flat_gradient_buffer():
    model = make_model()
    opt = optim.AdamW(model.parameters(), lr=0.01)
    train_steps(model, opt, 2)
    (buffers,) = flat_buffers(opt)
    views = [param.grad for param in model.parameters()]
    assert all(view is buffers.grads[k] for k, view in enumerate(views))
    opt.zero_grad()
    assert all(param.grad is None for param in model.parameters())    # set_to_none, as torch
    x = mt.tensor(np.ones((4, 3), np.float32))
    F.cross_entropy(model(x), np.array([0, 1, 0, 1])).backward()
    assert all(param.grad is view for param, view in zip(model.parameters(), views))
    expected = make_model()                   # the same weights, no optimizer: plain arrays
    for p, q in zip(expected.parameters(), model.parameters()):
        p.data = q.data.copy()
    F.cross_entropy(expected(x), np.array([0, 1, 0, 1])).backward()
    for p, q in zip(expected.parameters(), model.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-6)
    F.cross_entropy(model(x), np.array([0, 1, 0, 1])).backward()   # accumulates in place
    for p, q in zip(expected.parameters(), model.parameters()):
        np.testing.assert_allclose(q.grad, 2 * p.grad, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_flat_equals_per_parameter(dtype):
    models = make_model(dtype), make_model(dtype)
    opts = [optim.AdamW(grouped(list(model.parameters())), lr=0.01, flat=flat)
            for model, flat in zip(models, (True, False))]
    schedules = [optim.CosineLR(opt, warmup=2, total=10) for opt in opts]
    for model, opt, schedule in zip(models, opts, schedules):
        train_steps(model, opt, 6, schedule=schedule)
    for p, q in zip(*(model.parameters() for model in models)):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.dtype == dtype


def test_loading_the_model_keeps_the_optimizer_on_its_parameters():
    model, twin = make_model(), make_model()
    opt = optim.AdamW(model.parameters(), lr=0.01)
    twin_opt = optim.AdamW(twin.parameters(), lr=0.01, flat=False)
    train_steps(model, opt, 3)
    train_steps(twin, twin_opt, 3)
    snapshot = make_model().state_dict()
    model.load_state_dict(snapshot)
    twin.load_state_dict(snapshot)
    train_steps(model, opt, 3, seed=1)
    train_steps(twin, twin_opt, 3, seed=1)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert not np.array_equal(p.data, snapshot[name])          # the steps moved them


def test_loading_the_optimizer_copies_into_the_flat_buffers(tmp_path):
    straight = make_model()
    opt = optim.AdamW(grouped(list(straight.parameters())), lr=0.01)
    train_steps(straight, opt, 4)
    mt.save({"model": straight.state_dict(), "optimizer": opt.state_dict()},
            tmp_path / "ckpt.npz")
    train_steps(straight, opt, 3, seed=1)

    resumed = make_model()
    resumed_opt = optim.AdamW(grouped(list(resumed.parameters())), lr=0.01)
    train_steps(resumed, resumed_opt, 1, seed=2)            # flat buffers exist already
    held = {i: entry["exp_avg"] for i, entry in resumed_opt.state.items()}
    ckpt = mt.load(tmp_path / "ckpt.npz")
    resumed.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["optimizer"])
    assert all(resumed_opt.state[i]["exp_avg"] is array for i, array in held.items())
    assert all(np.shares_memory(resumed_opt.state[buffers.indices[0]]["exp_avg"],
                                buffers.state["exp_avg"]) for buffers in flat_buffers(resumed_opt))
    train_steps(resumed, resumed_opt, 3, seed=1)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_state_replaced_by_hand_is_moved_into_the_flat_buffers():
    params, textbook_params = make_params(np.float64), make_params(np.float64)
    opt = optim.Adam(params, lr=0.01)
    textbook = optim.Adam(textbook_params, lr=0.01, flat=False)
    for o, ps in ((opt, params), (textbook, textbook_params)):
        run(o, ps, gradient_steps(2, np.float64))
        o.state[0] = {key: value.copy() if isinstance(value, np.ndarray) else value
                      for key, value in o.state[0].items()}
        o.state[0]["exp_avg"] *= 2
        run(o, ps, gradient_steps(2, np.float64, seed=3))
    for p, q in zip(params, textbook_params):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_rebound_param_data_is_the_one_updated():
    params, textbook_params = make_params(np.float32), make_params(np.float32)
    opt = optim.AdamW(params, lr=0.01)
    textbook = optim.AdamW(textbook_params, lr=0.01, flat=False)
    run(opt, params, gradient_steps(2, np.float32))
    run(textbook, textbook_params, gradient_steps(2, np.float32))
    old = params[0].data
    frozen = old.copy()
    params[0].data = np.ones((3, 4), np.float32)
    textbook_params[0].data = np.ones((3, 4), np.float32)
    run(opt, params, gradient_steps(2, np.float32, seed=5))
    run(textbook, textbook_params, gradient_steps(2, np.float32, seed=5))
    np.testing.assert_array_equal(old, frozen)                 # the old array is left alone
    for p, q in zip(params, textbook_params):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_reshaped_parameter_is_not_stepped_flat():
    params = make_params(np.float64)
    adam = optim.Adam(params, lr=0.01)
    run(adam, params, gradient_steps(1, np.float64))
    params[3].data, params[3].grad = np.zeros((2, 2)), np.ones((2, 2))
    (buffers,) = flat_buffers(adam)
    assert buffers.prepare(adam.state) is None
    with pytest.raises(ValueError):   # the textbook update: its moments no longer fit
        adam.step()


def test_shared_parameters_and_mixed_dtypes():
    mt.manual_seed(0)
    shared = nn.Linear(4, 4)
    models = []
    for _ in range(2):
        model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
        models.append(model)
    assert len(list(models[0].parameters())) == 4                   # the shared one once
    params = list(models[0].parameters()) + [nn.Parameter(np.ones(3))]   # plus a float64
    twins = [nn.Parameter(p.data.copy()) for p in params]
    opt, textbook = optim.AdamW(params, lr=0.01), optim.AdamW(twins, lr=0.01, flat=False)
    assert flat_buffers(opt) == []                                  # made at the first step
    rng = np.random.default_rng(0)
    for _ in range(3):
        for p, q in zip(params, twins):
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
            q.grad = p.grad.copy()
        opt.step()
        textbook.step()
    assert sorted(str(b.dtype) for b in flat_buffers(opt)) == ["float32", "float64"]
    for p, q in zip(params, twins):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_late_parameter_keeps_its_own_step_count():
    late, early = nn.Parameter(np.array([0.0])), nn.Parameter(np.array([0.0]))
    opt = optim.Adam([early, late], lr=0.1)
    for _ in range(3):
        early.grad = np.array([1.0])
        opt.step()
    for _ in range(2):
        early.grad, late.grad = np.array([1.0]), np.array([1.0])
        opt.step()
    assert opt.state[0]["step"] == 5 and opt.state[1]["step"] == 2
    np.testing.assert_allclose(late.data, [-0.2], rtol=1e-6)


def test_frozen_parameters_stay_outside_the_flat_buffers():
    models = make_model(), make_model()
    for model in models:
        model[0].weight.requires_grad = False              # frozen from the start
    opts = [optim.AdamW(model.parameters(), lr=0.01, flat=flat)
            for model, flat in zip(models, (True, False))]
    for model, opt in zip(models, opts):
        train_steps(model, opt, 3)
    (buffers,) = flat_buffers(opts[0])
    frozen = models[0][0].weight
    assert all(param is not frozen for param in buffers.params) and len(buffers.params) == 5
    assert buffers.prepare(opts[0].state) is not None       # the others step flat
    for model in models:
        model[0].weight.requires_grad = True               # unfrozen: textbook update
    for model, opt in zip(models, opts):
        train_steps(model, opt, 3, seed=1)
    for p, q in zip(*(model.parameters() for model in models)):
        np.testing.assert_array_equal(p.data, q.data)
    assert opts[0].state[0]["step"] == 3 and opts[0].state[1]["step"] == 6


def test_a_step_without_gradients_waits_for_the_buffers():
    params = make_params(np.float64)
    opt = optim.Adam(params, lr=0.01)
    opt.step()                                             # no gradients yet: a no-op
    assert opt.state == {} and flat_buffers(opt) == []
    run(opt, params, gradient_steps(1, np.float64))
    assert len(flat_buffers(opt)[0].params) == len(SHAPES)
