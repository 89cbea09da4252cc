"""Issue 29, the writing side: what a save does with a careless or hostile target.

Every writer (mt.save, save_safetensors, save_pretrained, viz.render, write_player) follows
one set of rules (microtensor/files.py; docs/reference.md, "Files you write"): missing
folders are created, a symlink is written through, the target keeps its permissions, a
read-only or special target is refused, errors name the function, the path given and the
fix (never a temporary file), and a killed writer's leftovers are removed by the next
write, never a running one's. The viz writers are tested in test_hostile_write_viz.py.

Each probe is bounded: in-process tests by an alarm, and the ones that could hang, copy
a tree or fill memory run in a subprocess with a time limit and an address-space cap.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
from microtensor.safetensors_io import load_safetensors, save_safetensors
from transformer import DecoderLM, LMConfig

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX files: modes, FIFOs, kill")

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 60                     # the time limit of every probe
MEMORY = 2 * 2**30               # the address-space cap of a probe's subprocess
NOBODY = 65534


@pytest.fixture(autouse=True)
def _time_limit():
    """An in-process test that runs past SECONDS fails instead of hanging the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"the test ran over {SECONDS} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# What a probe's subprocess runs first: the memory cap, every import a probe needs (an
# unprivileged probe cannot import from a root-only site-packages later), then, with
# `unprivileged`, root drops to `nobody`, for whom a 0555 folder is read-only.
PREAMBLE = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
import json, signal, time
import numpy as np
import graphviz, safetensors.numpy
import microtensor as mt
import viz
import viz.engine
from microtensor.safetensors_io import save_safetensors
from transformer import DecoderLM, LMConfig
import transformer.hub.pretrained as pretrained
viz.find_engine()
if {unprivileged} and os.geteuid() == 0:
    os.setgid({nobody}); os.setuid({nobody})

def tiny_lm():
    return DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1))

def report(error):
    print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
"""


def probe(code: str, *args, unprivileged: bool = False, cwd=None, wait: bool = True):
    """Run `code` (after PREAMBLE) in a subprocess capped at MEMORY bytes; with `wait`,
    return it finished (within SECONDS), else the running Popen."""
    script = PREAMBLE.format(memory=MEMORY, unprivileged=unprivileged, nobody=NOBODY) \
        + textwrap.dedent(code)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-c", script, *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def reported(done) -> tuple[str, str]:
    """(type, message) of the error a probe printed with report()."""
    import json
    line = json.loads(done.stdout.strip().splitlines()[-1])
    return line["type"], line["message"]


@pytest.fixture
def shared_dir():
    """A scratch folder that `nobody` can enter (pytest's tmp_path is root's own)."""
    folder = Path(tempfile.mkdtemp(prefix="hostile-write-"))
    folder.chmod(0o755)
    yield folder
    for path, dirs, _ in os.walk(folder):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(path, name), 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def tiny_lm() -> DecoderLM:
    return DecoderLM(LMConfig.gpt2(vocab=16, d_model=8, n_heads=2, n_layers=1))


def beside(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------- 19: read-only folder
def test_19_saving_into_a_read_only_folder_names_the_target_and_the_fix(shared_dir):
    folder = shared_dir / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    done = probe("""
        import json
        target = sys.argv[1]
        w = mt.randn(3, requires_grad=True, name="w")
        loss = (w * 2).sum()
        writers = {
            "save": lambda: mt.save({"a": 1}, os.path.join(target, "ckpt.npz")),
            "save_safetensors": lambda: save_safetensors(
                {"w": np.ones(2)}, os.path.join(target, "w.safetensors")),
            "save_pretrained": lambda: tiny_lm().save_pretrained(os.path.join(target, "model")),
            "render": lambda: viz.render(loss, os.path.join(target, "g.svg")),
            "write_player": lambda: viz.write_player(loss, os.path.join(target, "p.html")),
        }
        results = {}
        for name, write in writers.items():
            try:
                write()
                results[name] = None
            except Exception as error:
                results[name] = [type(error).__name__, str(error)]
        results["grad filled"] = w.grad is not None
        print(json.dumps(results))
    """, folder, unprivileged=True)
    import json
    results = json.loads(done.stdout.strip().splitlines()[-1])
    targets = {"save": "ckpt.npz", "save_safetensors": "w.safetensors",
               "save_pretrained": "model", "render": "g.svg", "write_player": "p.html"}
    for name, file in targets.items():
        assert results[name] is not None, f"{name} wrote into a read-only folder"
        kind, message = results[name]
        assert kind == "PermissionError", (name, kind, message)
        assert message.startswith(f"{name}: cannot write '{folder / file}': its folder "
                                  f"'{folder}' is not writable"), message
        assert "chmod u+w" in message and ".tmp" not in message, message
    assert results["grad filled"] is False    # write_player refused before running backward
    assert beside(folder) == []


# --------------------------------------------------------------------- 20 and 23: entries
def test_20_a_link_loop_in_the_model_directory_is_kept_as_a_link(shared_dir):
    model = shared_dir / "model"
    tiny_lm().save_pretrained(model)
    (model / "loop").symlink_to(".")
    (model / "vocab.json").write_text("{}")
    done = probe("""
        tiny_lm().save_pretrained(sys.argv[1])
        print("saved")
    """, model)
    assert done.stdout.strip().endswith("saved")
    assert (model / "loop").is_symlink() and os.readlink(model / "loop") == "."
    assert (model / "vocab.json").read_text() == "{}"
    assert beside(shared_dir) == ["model"]
    assert beside(model) == ["config.json", "loop", "model.safetensors", "vocab.json"]


def test_20_a_fifo_in_the_model_directory_is_refused_before_anything_is_written(shared_dir):
    model = shared_dir / "model"
    tiny_lm().save_pretrained(model)
    before = (model / "model.safetensors").read_bytes()
    os.mkfifo(model / "pipe")
    done = probe("""
        try:
            tiny_lm().save_pretrained(sys.argv[1])
        except Exception as error:
            report(error)
    """, model)
    kind, message = reported(done)
    assert kind == "OSError"
    assert message == (f"save_pretrained: '{model}' holds 'pipe', a FIFO (named pipe): a save "
                       "carries the directory's other files over, and cannot carry that. "
                       "Move it out of the directory, or save to a new one")
    assert (model / "model.safetensors").read_bytes() == before
    assert stat.S_ISFIFO(os.lstat(model / "pipe").st_mode)
    assert beside(shared_dir) == ["model"]


def test_23_a_link_to_a_big_tree_is_carried_as_a_link_not_copied(shared_dir):
    tree = shared_dir / "tree"
    for k in range(50):
        (tree / f"d{k}").mkdir(parents=True)
        (tree / f"d{k}" / "page.txt").write_text("x" * 1000)
    model = shared_dir / "model"
    tiny_lm().save_pretrained(model)
    (model / "docs").symlink_to(tree)
    (model / "notes").mkdir()
    (model / "notes" / "README.md").write_text("mine")
    (model / "notes" / "inner").symlink_to("/usr/share/doc")
    (model / "tokenizer.json").write_text("{}")
    os.chmod(model / "tokenizer.json", 0o640)
    probe("tiny_lm().save_pretrained(sys.argv[1])", model)
    assert (model / "docs").is_symlink() and os.readlink(model / "docs") == str(tree)
    assert (model / "notes").is_dir() and not (model / "notes").is_symlink()
    assert (model / "notes" / "README.md").read_text() == "mine"
    assert os.readlink(model / "notes" / "inner") == "/usr/share/doc"
    assert stat.S_IMODE(os.stat(model / "tokenizer.json").st_mode) == 0o640
    assert beside(shared_dir) == ["model", "tree"]


# --------------------------------------------------------------------- 21: killed saves
# A save that stops for good at a chosen moment: it prints "stalled" and sleeps, alive,
# until the test kills it.
STALL = """
def stall(*args, **kwargs):
    sys.stdout.write("stalled\\n"); sys.stdout.flush()
    time.sleep(600)
"""


def stalled(code: str, *args):
    writer = probe(STALL + textwrap.dedent(code), *args, wait=False)
    assert writer.stdout.readline() == "stalled\n"
    return writer


def kill(writer):
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=SECONDS)
    writer.stdout.close()


def strays(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith((".tmp", ".old")))


def test_21_a_killed_save_pretrained_is_cleaned_up_by_the_next_save_not_a_running_one(
        shared_dir):
    model = shared_dir / "model"
    tiny_lm().save_pretrained(model)
    (model / "vocab.json").write_text("{}")
    # Stalled while writing the weights: its staging folder is half full.
    code = """
        original = pretrained.save_safetensors
        def write_then_stall(*args, **kwargs):
            original(*args, **kwargs)
            stall()
        pretrained.save_safetensors = write_then_stall
        tiny_lm().save_pretrained(sys.argv[1])
    """
    first, second = stalled(code, model), stalled(code, model)
    try:
        assert len(strays(shared_dir)) == 2
        kill(first)
        tiny_lm().save_pretrained(model)         # removes the dead one's, keeps the other's
        (running,) = strays(shared_dir)
        assert f".{second.pid}." in running
    finally:
        kill(second)
    tiny_lm().save_pretrained(model)
    assert strays(shared_dir) == []
    assert (model / "vocab.json").read_text() == "{}"


def test_21_a_save_killed_between_its_renames_gets_its_directory_back(shared_dir):
    model = shared_dir / "model"
    tiny_lm().save_pretrained(model)
    (model / "vocab.json").write_text("{}")
    # The old directory is moved aside, then the save stops before the new one moves in.
    writer = stalled("""
        rename = os.rename
        def aside_then_stall(source, target):
            rename(source, target)
            if target.endswith(".old"):
                stall()
        pretrained.os.rename = aside_then_stall
        tiny_lm().save_pretrained(sys.argv[1])
    """, model)
    kill(writer)
    assert not model.exists() and len(strays(shared_dir)) == 2     # .old and .tmp
    tiny_lm().save_pretrained(model)
    assert strays(shared_dir) == [] and (model / "vocab.json").read_text() == "{}"
    DecoderLM.from_pretrained(model)


def test_21_a_killed_save_safetensors_is_cleaned_up_by_the_next_save(shared_dir):
    path = shared_dir / "w.safetensors"
    writer = stalled("""
        os.replace = stall
        save_safetensors({"w": np.ones(1000)}, sys.argv[1])
    """, path)
    kill(writer)
    assert len(strays(shared_dir)) == 1
    save_safetensors({"w": np.ones(2)}, path)
    assert beside(shared_dir) == ["w.safetensors"]


# --------------------------------------------------------------------- 22: symlinks
def test_22_save_pretrained_to_a_symlink_writes_through_it(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "vocab.json").write_text("{}")
    (tmp_path / "link").symlink_to("real")
    tiny_lm().save_pretrained(tmp_path / "link")
    assert os.readlink(tmp_path / "link") == "real"
    assert beside(tmp_path / "real") == ["config.json", "model.safetensors", "vocab.json"]
    assert beside(tmp_path) == ["link", "real"]          # no `.link.*.old` left behind
    DecoderLM.from_pretrained(tmp_path / "link")


def test_22_mt_save_and_save_safetensors_to_a_symlink_write_through_it(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"")
    (tmp_path / "ckpt.npz").symlink_to("real.npz")
    mt.save({"step": 3}, tmp_path / "ckpt.npz")
    assert os.readlink(tmp_path / "ckpt.npz") == "real.npz"
    assert mt.load(tmp_path / "real.npz") == {"step": 3}
    (tmp_path / "w.safetensors").symlink_to("sub/real.safetensors")   # dangling: created
    save_safetensors({"w": np.ones(2)}, tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").is_symlink()
    assert load_safetensors(tmp_path / "sub" / "real.safetensors")["w"].shape == (2,)
    assert beside(tmp_path) == ["ckpt.npz", "real.npz", "sub", "w.safetensors"]


def test_22_a_link_loop_is_refused_by_name(tmp_path):
    (tmp_path / "a.npz").symlink_to("b.npz")
    (tmp_path / "b.npz").symlink_to("a.npz")
    with pytest.raises(OSError, match=r"save: '.*a\.npz' is a symbolic link that leads back "
                                      r"to itself \(a loop\)\. Remove the link"):
        mt.save({"a": 1}, tmp_path / "a.npz")
    (tmp_path / "m").symlink_to("m")
    with pytest.raises(OSError, match="save_pretrained: .* leads back to itself"):
        tiny_lm().save_pretrained(tmp_path / "m")
    assert beside(tmp_path) == ["a.npz", "b.npz", "m"]


# --------------------------------------------------------------------- 25: permissions
def test_25_mt_save_keeps_the_files_mode_and_refuses_a_read_only_one(tmp_path):
    path = tmp_path / "ckpt.npz"
    mt.save({"a": 1}, path)
    path.chmod(0o600)
    mt.save({"a": 2}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and mt.load(path) == {"a": 2}
    path.chmod(0o444)
    with pytest.raises(PermissionError, match=r"save: '.*ckpt\.npz' is read-only \(mode "
                                              r"0444\), so it is not replaced\. Make it "
                                              r"writable first \(chmod u\+w"):
        mt.save({"a": 3}, path)
    assert mt.load(path) == {"a": 2} and beside(tmp_path) == ["ckpt.npz"]


def test_25_save_safetensors_keeps_the_files_mode(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"w": np.ones(2)}, path)
    path.chmod(0o640)
    save_safetensors({"w": np.zeros(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_25_save_pretrained_keeps_the_directorys_mode_and_its_files(tmp_path):
    model = tmp_path / "model"
    tiny_lm().save_pretrained(model)
    model.chmod(0o700)
    (model / "model.safetensors").chmod(0o600)
    tiny_lm().save_pretrained(model)
    assert stat.S_IMODE(model.stat().st_mode) == 0o700
    assert stat.S_IMODE((model / "model.safetensors").stat().st_mode) == 0o600
    (model / "config.json").chmod(0o444)
    with pytest.raises(PermissionError, match=r"save_pretrained: '.*config\.json' is "
                                              r"read-only, and a save replaces it"):
        tiny_lm().save_pretrained(model)
    (model / "config.json").chmod(0o644)
    model.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"save_pretrained: '.*model' is read-only"):
            tiny_lm().save_pretrained(model)
    finally:
        model.chmod(0o755)
    assert beside(tmp_path) == ["model"]


def test_25_a_fifo_or_device_target_is_refused_not_replaced(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(OSError, match=r"save: '.*pipe\.npz' is a FIFO \(named pipe\), not a "
                                      r"regular file: writing would replace it"):
        mt.save({"a": 1}, tmp_path / "pipe.npz")
    (tmp_path / "null.npz").symlink_to(os.devnull)      # through the link: /dev/null itself
    with pytest.raises(OSError, match="is a character device, not a regular file"):
        mt.save({"a": 1}, tmp_path / "null.npz")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match=r"save_pretrained: '.*file' is a file, not a "
                                              r"directory"):
        tiny_lm().save_pretrained(tmp_path / "file")


# --------------------------------------------------------------------- also: parent folders
def test_every_writer_creates_missing_folders(tmp_path):
    mt.save({"a": 1}, tmp_path / "a" / "b" / "ckpt.npz")
    save_safetensors({"w": np.ones(2)}, tmp_path / "c" / "w.safetensors")
    tiny_lm().save_pretrained(tmp_path / "d" / "e" / "model")
    assert mt.load(tmp_path / "a" / "b" / "ckpt.npz") == {"a": 1}
    assert (tmp_path / "c" / "w.safetensors").is_file()
    DecoderLM.from_pretrained(tmp_path / "d" / "e" / "model")
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotADirectoryError, match=r"save_pretrained: cannot create the folder "
                                                 r".*plain.* a part of it is a file"):
        tiny_lm().save_pretrained(tmp_path / "plain" / "model")


# --------------------------------------------------------------------- 26: the terminal
def test_26_the_training_sample_escapes_control_characters(shared_dir):
    text = shared_dir / "controls.txt"
    text.write_text("\x1b[2J\x00\x07\r" * 400 + "ab \n\t" * 200, encoding="utf-8")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    capped_cli = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, "
                  f"{MEMORY})); import runpy; runpy.run_module('transformer', "
                  "run_name='__main__')")             # python -m transformer, memory capped
    done = subprocess.run(
        [sys.executable, "-c", capped_cli,
         "train", "--task", "charlm", "--text", str(text), "--steps", "2", "--seq-len", "16",
         "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--d-ff", "32",
         "--batch-size", "4", "--log-every", "1", "--out", str(shared_dir / "run")],
        env=env, capture_output=True, timeout=SECONDS, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    sample = done.stdout.split(b"\nsample: ")[1].split(b"\nsaved ")[0]   # lines may break it
    assert not any(byte < 32 and byte not in b"\n\t" for byte in sample), sample[:200]
    assert any(escaped in sample for escaped in (b"\\x1b", b"\\x00", b"\\x07", b"\\r"))
