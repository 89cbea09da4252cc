"""Interrupted training: `python -m transformer train` killed with SIGKILL at random moments,
including in the middle of writing a checkpoint, always leaves a checkpoint that loads, and
`--resume` then ends with exactly the parameters of a run that was never interrupted.

SIGKILL cannot be caught, so nothing in the process gets to clean up: what survives is only
what the atomic save (temporary file, fsync, rename) guarantees.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
from transformer.__main__ import main
from transformer.train import CHECKPOINT, load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
# Tiny and fast (a step takes a few ms), dropout on so the restored random state matters,
# a checkpoint every 2 steps so kills land near saves often.
ARGS = ["train", "--task", "reverse", "--seq-len", "6", "--n-symbols", "8", "--d-model", "16",
        "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--batch-size", "16",
        "--lr", "3e-3", "--warmup", "5", "--dropout", "0.1", "--log-every", "1000",
        "--steps", str(STEPS), "--ckpt-every", "2", "--seed", "3"]

# Run the real CLI, but make each checkpoint write pause halfway through its members, so a
# kill can be aimed at a save in progress. Everything else is the unmodified code.
SLOW_SAVE = """
import runpy, sys, time
import numpy as np
import microtensor.checkpoint as checkpoint

write_array = np.lib.format.write_array
original_write_npz = checkpoint._write_npz
state = {"left": 0}

def write_array_pausing(*args, **kwargs):
    write_array(*args, **kwargs)
    state["left"] -= 1
    if state["left"] == 0:
        sys.stdout.write("saving\\n"); sys.stdout.flush()
        time.sleep(0.4)  # half of the members are in the temporary file

def write_npz_pausing(file, arrays):
    state["left"] = len(arrays) // 2
    original_write_npz(file, arrays)

np.lib.format.write_array = write_array_pausing
checkpoint._write_npz = write_npz_pausing
sys.argv = ["transformer", *sys.argv[1:]]
runpy.run_module("transformer", run_name="__main__")
"""


def start(args, folder, wrapper=None, **popen):
    command = ([sys.executable, "-c", wrapper] if wrapper else
               [sys.executable, "-m", "transformer"])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([*command, *args, "--out", str(folder)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True, **popen)


def kill(process) -> bool:
    """SIGKILL the process; True if it was still running (the kill interrupted it)."""
    running = process.poll() is None
    if running:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return running


def temporary_files(folder) -> list[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")] \
        if os.path.isdir(folder) else []


def check_loadable(folder) -> int | None:
    """The step of the run's checkpoint after a kill (None if none was written yet);
    it must load with mt.load and rebuild a model through the CLI's own loader."""
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.exists(path):
        return None
    ckpt = mt.load(path)
    assert load_checkpoint(str(folder))["step"] == ckpt["step"]
    model, tokenizer, opts = model_from_checkpoint(ckpt)
    assert opts["task"] == "reverse" and opts["seed"] == 3
    assert model.config["src_vocab"] == tokenizer.vocab_size
    for name, value in ckpt["model"].items():
        assert np.isfinite(value).all(), name
    return int(ckpt["step"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, never interrupted (in-process: same code, no start-up cost)."""
    folder = tmp_path_factory.mktemp("straight")
    from contextlib import redirect_stdout
    from io import StringIO
    with redirect_stdout(StringIO()):
        assert main([*ARGS, "--out", str(folder)]) == 0
    return load_checkpoint(str(folder))


def assert_same_run(expected, actual):
    assert actual["step"] == expected["step"] == STEPS
    assert actual["model"].keys() == expected["model"].keys()
    for name, value in expected["model"].items():
        assert np.array_equal(value, actual["model"][name]), f"parameter {name} differs"
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert np.array_equal(value, actual["optimizer"]["state"][index][key]), \
                f"optimizer state {index}/{key} differs"
    assert actual["rng"] == expected["rng"]


def test_random_kills_always_leave_a_loadable_checkpoint_and_resume_exactly(
        reference, tmp_path):
    folder = tmp_path / "killed"
    chance = random.Random(1234)
    steps_seen, interrupted, mid_save = [], 0, 0
    for _ in range(12):
        # Kill after a random number of logged steps (0: during start-up), plus a random
        # fraction of a step: kills land before the first step, mid-step, during saves and
        # during the final evaluation, however fast the machine is.
        leftovers = len(temporary_files(folder))
        process = start([*ARGS, "--resume", "--log-every", "1"], folder,
                        stdout=subprocess.PIPE)
        target, logged = chance.randint(0, 25), 0
        for line in process.stdout:
            logged += "| loss " in line
            if logged >= target:
                break
        time.sleep(chance.uniform(0, 0.005))
        interrupted += kill(process)
        process.stdout.close()
        mid_save += len(temporary_files(folder)) > leftovers  # this kill cut a save short
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read()
        step = check_loadable(folder)
        if step is not None:
            assert not steps_seen or step >= steps_seen[-1], "a checkpoint went backwards"
            steps_seen.append(step)
        if process.returncode == 0 and step == STEPS:
            break
    else:
        process = start([*ARGS, "--resume"], folder, stdout=subprocess.DEVNULL)
        assert process.wait(timeout=60) == 0, process.stderr.read()
    assert interrupted >= 3, f"the kills interrupted only {interrupted} run(s): {steps_seen}"
    print(f"{interrupted} kills, {mid_save} during a save, checkpoints at {steps_seen}")
    assert len(set(steps_seen)) >= 2, f"no progress between kills: {steps_seen}"
    assert_same_run(reference, load_checkpoint(str(folder)))


def test_kill_in_the_middle_of_a_checkpoint_write(reference, tmp_path):
    folder = tmp_path / "mid-save"
    path = folder / CHECKPOINT
    kills_mid_save = 0
    for _ in range(3):
        process = start([*ARGS, "--resume"], folder, wrapper=SLOW_SAVE, stdout=subprocess.PIPE)
        before = check_loadable(folder)
        # Wait for the second save of this session to begin, so a previous checkpoint
        # (from this session or an earlier one) is on disk, then kill during the pause.
        saves = 0
        for line in process.stdout:  # log lines, then the markers of the pausing saves
            saves += line == "saving\n"
            if saves == 2:
                break
        assert saves == 2, process.stderr.read()
        assert temporary_files(folder), "no temporary file while saving"
        assert kill(process)
        # The killed save left its half-written temporary file; the checkpoint itself is
        # the previous complete one, and it loads.
        assert temporary_files(folder)
        step = check_loadable(folder)
        assert step is not None and step < STEPS
        assert before is None or step >= before
        kills_mid_save += 1
        with pytest.raises(mt.CheckpointError, match="corrupt or truncated|is not a"):
            mt.load(folder / temporary_files(folder)[-1])
    assert kills_mid_save == 3 and path.exists()
    process = start([*ARGS, "--resume"], folder, stdout=subprocess.DEVNULL)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert_same_run(reference, load_checkpoint(str(folder)))
    # The killed saves' temporary files name a process that is gone: the next save to
    # the same path removed them.
    assert temporary_files(folder) == []


def test_ctrl_c_during_a_checkpoint_write_leaves_no_temporary_file(reference, tmp_path):
    """SIGINT (Ctrl-C) can be caught: the interrupted save removes its temporary file, the
    previous checkpoint stays, and --resume still ends exactly where it should."""
    folder = tmp_path / "ctrl-c"
    process = start([*ARGS], folder, wrapper=SLOW_SAVE, stdout=subprocess.PIPE)
    saves = 0
    for line in process.stdout:
        saves += line == "saving\n"
        if saves == 2:
            break
    assert saves == 2 and temporary_files(folder)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) != 0
    assert "KeyboardInterrupt" in process.stderr.read()
    assert temporary_files(folder) == []
    assert check_loadable(folder) == 2          # the first save; the second never landed
    process = start([*ARGS, "--resume"], folder, stdout=subprocess.DEVNULL)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert_same_run(reference, load_checkpoint(str(folder)))
