"""Checkpoints: exact round trips without pickle, atomic writes, clear refusals, and
training that resumes from a checkpoint exactly as if it had never stopped."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microtensor as mt
import microtensor.functional as F
from microtensor import checkpoint, nn, optim

# ---------------------------------------------------------------------- round trips
ARRAYS = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.bool_])
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=False), st.text(max_size=8),
    st.builds(lambda dtype, shape: np.arange(int(np.prod(shape)), dtype=np.int64)
              .astype(dtype).reshape(shape),
              ARRAYS, st.lists(st.integers(0, 3), max_size=3).map(tuple)))
KEYS = st.text(max_size=6)
TREES = st.recursive(LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple),
    st.dictionaries(KEYS, children, max_size=3)), max_leaves=12)


def assert_same(loaded, saved):
    """Equal values and equal types all the way down (tuple stays tuple, int stays int,
    array dtype and shape kept)."""
    assert type(loaded) is type(saved), (loaded, saved)
    if isinstance(saved, dict):
        assert list(loaded) == list(saved)
        for key in saved:
            assert_same(loaded[key], saved[key])
    elif isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved)
        for a, b in zip(loaded, saved):
            assert_same(a, b)
    elif isinstance(saved, np.ndarray):
        assert loaded.dtype == saved.dtype and loaded.shape == saved.shape
        np.testing.assert_array_equal(loaded, saved)
    else:
        assert loaded == saved


@settings(max_examples=40, deadline=None)
@given(tree=st.dictionaries(KEYS, TREES, max_size=4))
def test_any_nested_structure_round_trips_exactly(tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tree.npz"
    mt.save(tree, path)
    assert_same(mt.load(path), tree)


def test_round_trip_of_every_kind(tmp_path):
    tree = {"weights": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
            "scalar0d": np.array(2.5), "npscalar": np.float32(1.5), "empty": {},
            "nothing": None, "flag": True, "count": 2**40, "rate": 0.1, "tiny": 5e-324,
            "inf": float("inf"), "text": "我想吃 ✓", "betas": (0.9, 0.98),
            "history": [1, 2.5, "three", None, [4]], "nested": {"a": {"b": {"c": 1}}}}
    mt.save(tree, tmp_path / "all.npz")
    loaded = mt.load(tmp_path / "all.npz")
    assert_same(loaded, tree)
    assert isinstance(loaded["npscalar"], np.float32)


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    opt = optim.AdamW(model.parameters())
    mt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7},
            tmp_path / "ckpt.npz")
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as raw:
        assert set(raw.files) >= {"__microtensor__", "model/0.weight", "model/2.bias",
                                  "optimizer/hyper/lr", "optimizer/hyper/betas/0", "step"}
        assert raw["step"].shape == () and raw["step"].dtype == np.int64
        assert raw["optimizer/optimizer"].dtype.kind == "U"
        assert not any(raw[key].dtype.hasobject for key in raw.files)
        index = json.loads(str(raw["__microtensor__"]))
    assert index["format"] == "microtensor.checkpoint" and index["version"] == 1


def test_any_string_key_round_trips_and_plain_keys_stay_readable(tmp_path):
    tree = {"model": {"layers.0.W_q": np.ones(2)}, "a/b": 1, "a": {"b": 2}, "": 3,
            "__microtensor__": 4, "..": 5, "nul\x00key": 6, "我": 7, "__entry0": 8}
    mt.save(tree, tmp_path / "keys.npz")
    assert_same(mt.load(tmp_path / "keys.npz"), tree)
    with np.load(tmp_path / "keys.npz") as raw:
        assert {"model/layers.0.W_q", "a/b"} <= set(raw.files)  # the second is a.b = 2
        assert int(raw["a/b"]) == 2


@pytest.mark.parametrize("bad, kind, message", [
    ([1, 2], TypeError, "save: expected a dict at the top level, got list"),
    ({1: np.ones(2)}, TypeError, "save: dict keys must be strings, got 1"),
    ({"x": np.array([{}, 1], dtype=object)}, TypeError,
     "'x' is an array of dtype object, which can only be stored by pickling"),
    ({"x": {"y": {1, 2}}}, TypeError, "cannot store 'x/y' of type set without pickle"),
])
def test_save_refuses_what_it_cannot_store_without_pickle(bad, kind, message, tmp_path):
    with pytest.raises(kind, match=message):
        mt.save(bad, tmp_path / "bad.npz")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_folder_creates_it(tmp_path):
    mt.save({"a": 1}, tmp_path / "new" / "ckpt.npz")     # every writer: like mkdir -p
    assert mt.load(tmp_path / "new" / "ckpt.npz") == {"a": 1}
    with pytest.raises(IsADirectoryError, match=f"save: '{tmp_path}' is a folder"):
        mt.save({"a": 1}, tmp_path)
    assert os.listdir(tmp_path) == ["new"]


# ---------------------------------------------------------------------- refusals on load
def test_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match=f"load: no checkpoint file at '{path}'"):
        mt.load(path)
    with pytest.raises(IsADirectoryError, match="is a folder, not a checkpoint file"):
        mt.load(tmp_path)


def test_npz_that_is_not_ours(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3), bias=np.zeros(2))
    with pytest.raises(mt.CheckpointError, match=f"load: '{path}' is not a microtensor "
                       r"checkpoint: it has no '__microtensor__' entry \(it holds bias, "
                       r"weights\)"):
        mt.load(path)
    np.savez(path, __microtensor__=np.array("{not json"))
    with pytest.raises(mt.CheckpointError, match="entry is not ours"):
        mt.load(path)


def test_other_files_are_not_ours(tmp_path):
    npy, text, empty = tmp_path / "a.npy", tmp_path / "notes.txt", tmp_path / "empty.npz"
    np.save(npy, np.ones((2, 2)))
    text.write_text("hello")
    empty.write_bytes(b"")
    with pytest.raises(mt.CheckpointError, match=r"it is a single .npy array \(float64"):
        mt.load(npy)
    with pytest.raises(mt.CheckpointError, match=r"it is not a .npz file \(it starts with"):
        mt.load(text)
    with pytest.raises(mt.CheckpointError, match=r"is empty \(0 bytes\)"):
        mt.load(empty)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "future.npz"
    index = {"format": "microtensor.checkpoint", "version": 99, "tree": {"kind": "dict",
                                                                         "items": []}}
    np.savez(path, __microtensor__=np.array(json.dumps(index)))
    with pytest.raises(mt.CheckpointError, match="format version 99, newer than"):
        mt.load(path)


def save_npy(path, array, **options):
    with open(path, "wb") as file:  # np.save would append ".npy" to a name ending ".npz"
        np.save(file, array, **options)


@pytest.mark.parametrize("write", [
    lambda path: np.savez(path, ok=np.ones(2), evil=np.array([{"a": 1}, None], dtype=object)),
    lambda path: save_npy(path, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    lambda path: path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]})),
], ids=["npz-with-object-array", "npy-with-object-array", "raw-pickle"])
def test_pickled_content_is_refused(write, tmp_path):
    path = tmp_path / "evil.npz"
    write(path)
    with pytest.raises(mt.CheckpointError, match=f"'{path}'.* holds pickled Python objects; "
                       "refused"):
        mt.load(path)


def test_ours_with_an_object_array_slipped_in_is_refused(tmp_path):
    path = tmp_path / "tampered.npz"
    mt.save({"w": np.ones(2)}, path)
    with zipfile.ZipFile(path, "a") as archive, archive.open("w2.npy", "w") as member:
        np.lib.format.write_array(member, np.array([None], dtype=object), allow_pickle=True)
    with pytest.raises(mt.CheckpointError, match=r"\(entry 'w2'\) holds pickled"):
        mt.load(path)


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "ckpt.npz"
    mt.save({"w": np.arange(1000, dtype=np.float32)}, path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(mt.CheckpointError, match=f"'{path}' is corrupt or truncated"):
        mt.load(path)
    flipped = bytearray(whole)
    start = whole.index(np.arange(1000, dtype=np.float32)[500:510].tobytes())
    flipped[start] ^= 0xFF  # inside the array data: the zip CRC catches it
    path.write_bytes(bytes(flipped))
    with pytest.raises(mt.CheckpointError, match=r"\(entry 'w'\) is corrupt or truncated"):
        mt.load(path)


def test_index_naming_a_missing_entry_is_damage(tmp_path):
    path = tmp_path / "ckpt.npz"
    index = {"format": "microtensor.checkpoint", "version": 1,
             "tree": {"kind": "dict", "items": [["w", {"kind": "array", "entry": "w"}]]}}
    np.savez(path, __microtensor__=np.array(json.dumps(index)))
    with pytest.raises(mt.CheckpointError, match="is damaged: its index lists entry 'w'"):
        mt.load(path)


# ---------------------------------------------------------------------- atomic writes
def crash_on_second_array(monkeypatch, error):
    real_write = np.lib.format.write_array
    calls = []

    def write_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real_write(*args, **kwargs)
    monkeypatch.setattr(np.lib.format, "write_array", write_then_crash)
    return calls


@pytest.mark.parametrize("error", [RuntimeError("disk unplugged"), KeyboardInterrupt()])
def test_a_crash_mid_write_leaves_the_old_file_and_no_temporary(error, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mt.save({"version": "old", "w": np.zeros(4)}, path)
    before = path.read_bytes()
    calls = crash_on_second_array(monkeypatch, error)
    with pytest.raises(type(error)):
        mt.save({"version": "new", "w": np.ones(4), "extra": np.ones(8)}, path)
    assert len(calls) == 2  # the crash really happened half-way through writing
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == before and mt.load(path)["version"] == "old"


def test_a_crash_at_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mt.save({"version": "old"}, path)

    def fail(*args):
        raise OSError("rename failed")
    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        mt.save({"version": "new"}, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert mt.load(path)["version"] == "old"


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint.os, "fsync",
                        lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(checkpoint.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    mt.save({"w": np.ones(3)}, tmp_path / "ckpt.npz")
    assert events[:2] == ["fsync", "replace"]


# ---------------------------------------------------------------------- exact resume
def make_run(seed):
    mt.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 3))
    opt = optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.05)
    schedule = optim.CosineLR(opt, warmup=3, total=20, min_lr=1e-3)
    return model, opt, schedule


def batches(steps):
    rng = np.random.default_rng(42)
    return [(rng.standard_normal((16, 2)).astype(np.float32), rng.integers(0, 3, 16))
            for _ in range(steps)]


def train_steps(model, opt, schedule, data):
    for x, y in data:
        loss = F.cross_entropy(model(mt.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()


def test_save_load_and_continue_equals_uninterrupted_training(tmp_path):
    data = batches(12)
    model, opt, schedule = make_run(seed=0)
    train_steps(model, opt, schedule, data)

    first, first_opt, first_schedule = make_run(seed=0)
    train_steps(first, first_opt, first_schedule, data[:5])
    mt.save({"model": first.state_dict(), "optimizer": first_opt.state_dict(),
             "schedule": first_schedule.state_dict(), "step": 5}, tmp_path / "run.npz")

    resumed, resumed_opt, resumed_schedule = make_run(seed=123)  # different weights
    ckpt = mt.load(tmp_path / "run.npz")
    resumed.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["optimizer"])
    resumed_schedule.load_state_dict(ckpt["schedule"])
    train_steps(resumed, resumed_opt, resumed_schedule, data[ckpt["step"]:])

    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert np.array_equal(a.data, b.data), name
    for i, state in opt.state.items():
        assert state["step"] == resumed_opt.state[i]["step"] == 12
        assert np.array_equal(state["exp_avg_sq"], resumed_opt.state[i]["exp_avg_sq"])
    assert opt.lr == resumed_opt.lr


def test_resume_with_sgd_momentum_is_exact(tmp_path):
    def make(seed):
        mt.manual_seed(seed)
        model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=1e-3)
        return model, opt, optim.NoamLR(opt, d_model=8, warmup=4)
    data = batches(9)
    whole = make(0)
    train_steps(*whole, data)
    part = make(0)
    train_steps(*part, data[:4])
    part[0].save(tmp_path / "model.npz")
    mt.save({"optimizer": part[1].state_dict(), "schedule": part[2].state_dict()},
            tmp_path / "train.npz")
    resumed = make(1)
    resumed[0].load(tmp_path / "model.npz")
    state = mt.load(tmp_path / "train.npz")
    resumed[1].load_state_dict(state["optimizer"])
    resumed[2].load_state_dict(state["schedule"])
    train_steps(*resumed, data[4:])
    for a, b in zip(whole[0].parameters(), resumed[0].parameters()):
        assert np.array_equal(a.data, b.data)
