"""Optimizer parameter groups: per-group lr and weight_decay, the usual recipe that
exempts biases and LayerNorm weights from decay, schedules that drive every group, and
state_dict round trips (through mt.save too)."""
import numpy as np
import pytest

import microtensor as mt
import microtensor.functional as F
from microtensor import nn, optim


def make_model():
    mt.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))


def recipe_groups(model, weight_decay=0.1):
    """Decay the matrices; biases and LayerNorm weights (the 1-D parameters) get none."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def train_steps(model, opt, steps, schedule=None, seed=0):
    rng = np.random.default_rng(seed)
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = mt.tensor(rng.standard_normal((8, 3)).astype(dtype))
        y = rng.integers(0, 2, 8)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if schedule is not None:
            schedule.step()


def test_the_no_decay_recipe_decays_only_the_matrices():
    model = make_model()
    opt = optim.AdamW(recipe_groups(model), lr=0.01)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 4]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)       # the defaults fill the rest
    before = [p.data.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)     # zero gradients: only decay can move a weight
    opt.step()
    for p, old in zip(model.parameters(), before):
        if p.ndim >= 2:
            np.testing.assert_allclose(p.data, old * (1 - 0.01 * 0.1), rtol=1e-6)
        else:
            np.testing.assert_array_equal(p.data, old)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW"])
def test_each_group_steps_with_its_own_lr(kind):
    """Two groups with different lrs move exactly as two optimizers would."""
    def make(params, lr):
        return getattr(optim, kind)(params, lr=lr, weight_decay=0.05)
    grouped, separate = make_model(), make_model()
    first, second = list(grouped.parameters())[:2], list(grouped.parameters())[2:]
    opt = getattr(optim, kind)([{"params": first}, {"params": second, "lr": 0.003}],
                               lr=0.02, weight_decay=0.05)
    opts = [make(list(separate.parameters())[:2], 0.02), make(list(separate.parameters())[2:],
                                                              0.003)]
    rng = np.random.default_rng(1)
    for _ in range(4):
        for p, q in zip(grouped.parameters(), separate.parameters()):
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
            q.grad = p.grad.copy()
        opt.step()
        for o in opts:
            o.step()
    for p, q in zip(grouped.parameters(), separate.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("make_schedule", [
    lambda opt: optim.CosineLR(opt, warmup=3, total=12, min_lr=1e-4),
    lambda opt: optim.NoamLR(opt, d_model=16, warmup=4),
])
def test_schedules_drive_every_group_in_proportion(make_schedule):
    model = make_model()
    groups = recipe_groups(model)
    groups[1]["lr"] = 0.0005
    opt = optim.AdamW(groups, lr=0.001)
    schedule = make_schedule(opt)
    for _ in range(15):
        first, second = (g["lr"] for g in opt.param_groups)
        assert opt.lr == first == schedule.get_lr()
        assert second == pytest.approx(first / 2, rel=1e-12)
        schedule.step()
    opt.lr = 0.25                       # setting opt.lr sets every group
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_state_dict_round_trips_through_a_checkpoint(tmp_path):
    """Stop after 5 steps, save, restore into fresh objects, go on: the same weights as
    10 uninterrupted steps."""
    straight = make_model()
    opt = optim.AdamW(recipe_groups(straight), lr=0.01)
    schedule = optim.CosineLR(opt, warmup=2, total=10)
    train_steps(straight, opt, 5, schedule, seed=0)
    mt.save({"model": straight.state_dict(), "optimizer": opt.state_dict(),
             "schedule": schedule.state_dict()}, tmp_path / "ckpt.npz")
    train_steps(straight, opt, 5, schedule, seed=1)

    resumed = make_model()
    resumed_opt = optim.AdamW(recipe_groups(resumed, weight_decay=0.5), lr=0.9)
    resumed_schedule = optim.CosineLR(resumed_opt, warmup=2, total=10)
    ckpt = mt.load(tmp_path / "ckpt.npz")
    resumed.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["optimizer"])
    resumed_schedule.load_state_dict(ckpt["schedule"])
    assert [g["weight_decay"] for g in resumed_opt.param_groups] == [0.1, 0.0]
    train_steps(resumed, resumed_opt, 5, resumed_schedule, seed=1)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_state_saved_without_groups_still_loads():
    opt = optim.Adam(list(make_model().parameters()), lr=0.01)
    state = opt.state_dict()
    del state["param_groups"]                 # the format before groups existed
    state["hyper"]["lr"] = 0.5
    other = optim.Adam(list(make_model().parameters()), lr=0.01)
    other.load_state_dict(state)
    assert other.lr == 0.5


@pytest.mark.parametrize("make, kind, message", [
    (lambda ps: optim.SGD([{"params": ps[:2], "momentun": 0.9}], lr=0.1), ValueError,
     (r"SGD: parameter group 0 has unknown setting\(s\) \['momentun'\]\. A group may set: "
     r"lr, momentum, nesterov, weight_decay")),
    (lambda ps: optim.Adam([{"lr": 0.1}]), ValueError, (r"Adam: parameter group 0 has no "
                                                        r"'params'")),
    (lambda ps: optim.Adam({"params": ps}), TypeError, (r"Adam: got one dict; parameter groups "
                                                       r"are a list of dicts")),
    (lambda ps: optim.Adam([{"params": ps[:2]}, ps[2]]), TypeError,
     r"Adam: mixes parameter groups \(dicts\) with tensors"),
    (lambda ps: optim.Adam([{"params": ps[:2]}, {"params": ps[1:]}]), ValueError,
     r"Adam: parameter 2 appears more than once.*belongs to one group"),
    (lambda ps: optim.AdamW([{"params": ps[:2], "weight_decay": -1}]), ValueError,
     r"AdamW: weight_decay must be >= 0.0, got -1"),
    (lambda ps: optim.SGD([{"params": []}], lr=0.1), ValueError,
     r"SGD: got an empty parameter list"),
])
def test_bad_groups_are_refused_clearly(make, kind, message):
    with pytest.raises(kind, match=message) as info:
        make(list(make_model().parameters()))
    assert getattr(info.value, "microtensor", False)


def test_loading_into_other_groups_is_refused():
    params = list(make_model().parameters())
    state = optim.Adam([{"params": params[:2]}, {"params": params[2:]}]).state_dict()
    with pytest.raises(ValueError, match=r"its parameter groups hold \[2, 4\] parameters, this "
                                         r"optimizer's hold \[6\]"):
        optim.Adam(params).load_state_dict(state)
    schedule_state = optim.NoamLR(optim.Adam([{"params": params[:2]}, {"params": params[2:]}]),
                                  d_model=8, warmup=2).state_dict()
    with pytest.raises(ValueError, match=r"NoamLR.load_state_dict: it was saved for 2 parameter "
                                         r"group\(s\), the optimizer has 1"):
        optim.NoamLR(optim.Adam(params), d_model=8, warmup=2).load_state_dict(schedule_state)


def test_groups_match_torch_optim_adamw():
    torch = pytest.importorskip("torch")
    model = make_model()
    torch_params = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in model.parameters()]
    ours = optim.AdamW(recipe_groups(model), lr=0.01)
    decay = [tp for p, tp in zip(model.parameters(), torch_params) if p.ndim >= 2]
    no_decay = [tp for p, tp in zip(model.parameters(), torch_params) if p.ndim < 2]
    theirs = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                {"params": no_decay, "weight_decay": 0.0, "lr": 0.005}], lr=0.01)
    ours.param_groups[1]["lr"] = 0.005
    rng = np.random.default_rng(0)
    for _ in range(5):
        for p, tp in zip(model.parameters(), torch_params):
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
            tp.grad = torch.tensor(p.grad.copy())
        ours.step()
        theirs.step()
    for p, tp in zip(model.parameters(), torch_params):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-7)
