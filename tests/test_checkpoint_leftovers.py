"""Temporary files of killed saves: named after the writer's process id, removed by the
next save to the same path once that process is gone, never while it still runs."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt

pytestmark = pytest.mark.skipif(os.name != "posix", reason="probes processes with POSIX kill")

ROOT = Path(__file__).resolve().parents[1]

# A save that stops for good just before its rename: the temporary file is complete
# and fsync'ed, the process is alive, the target is not yet replaced.
STALLED_SAVE = """
import os, sys, time
import numpy as np
import microtensor as mt
import microtensor.checkpoint as checkpoint

def stall(*args):
    sys.stdout.write("stalled\\n"); sys.stdout.flush()
    time.sleep(600)

checkpoint.os.replace = stall
mt.save({"w": np.ones(3)}, sys.argv[1])
"""


def temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def finished_pid():
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_temporary_file_is_named_after_the_writer(tmp_path, monkeypatch):
    seen = []
    original = os.replace
    monkeypatch.setattr("microtensor.checkpoint.os.replace",
                        lambda src, dst: (seen.append(os.path.basename(src)), original(src, dst)))
    mt.save({"w": np.ones(2)}, tmp_path / "ckpt.npz")
    (name,) = seen
    assert name.startswith(f".ckpt.npz.{os.getpid()}.") and name.endswith(".tmp")


def test_leftovers_of_gone_writers_are_removed_and_others_kept(tmp_path):
    dead = finished_pid()
    leftover = tmp_path / f".ckpt.npz.{dead}.0123456789ab.tmp"
    alive = tmp_path / f".ckpt.npz.{os.getppid()}.0123456789ab.tmp"      # a running process
    other_target = tmp_path / f".other.npz.{dead}.0123456789ab.tmp"        # another path's
    not_ours = tmp_path / ".ckpt.npz.notes.tmp"
    for path in (leftover, alive, other_target, not_ours):
        path.write_bytes(b"half a checkpoint")
    mt.save({"w": np.ones(2)}, tmp_path / "ckpt.npz")
    assert temporaries(tmp_path) == sorted(p.name for p in (alive, other_target, not_ours))
    np.testing.assert_array_equal(mt.load(tmp_path / "ckpt.npz")["w"], np.ones(2))


def test_a_running_save_keeps_its_file_and_a_killed_one_is_cleaned_up(tmp_path):
    path = tmp_path / "ckpt.npz"
    mt.save({"w": np.zeros(3)}, path)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    writer = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, str(path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "stalled\n"
        (running,) = temporaries(tmp_path)
        assert f".{writer.pid}." in running
        mt.save({"w": np.full(3, 2.0)}, path)          # another save while it runs
        assert temporaries(tmp_path) == [running], "a running save lost its file"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert temporaries(tmp_path) == [running]          # SIGKILL: nothing could clean up
    mt.save({"w": np.full(3, 3.0)}, path)
    assert temporaries(tmp_path) == []
    np.testing.assert_array_equal(mt.load(path)["w"], np.full(3, 3.0))
