"""The training command line: learning (the reverse task and the GPL-3 character LM to
their stated bars, plus tiny fast versions), checkpoints, exact resume, generation, and
clear errors. Killing a run at random moments is tested in test_interrupt.py.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import microtensor as mt
from transformer import CharTokenizer, DecoderLM, LMConfig
from transformer.__main__ import main
from transformer.train import CHECKPOINT, load_checkpoint, model_from_checkpoint

GPL = "/usr/share/common-licenses/GPL-3"
TINY_REVERSE = ["train", "--task", "reverse", "--seq-len", "6", "--n-symbols", "8",
                "--d-model", "32", "--n-heads", "4", "--n-layers", "1",
                "--d-ff", "64", "--batch-size", "32", "--lr", "3e-3", "--warmup", "30",
                "--log-every", "50"]


def losses_in(output: str) -> list[float]:
    return [float(line.split("| loss ")[1].split()[0]) for line in output.splitlines()
            if "| loss " in line]


def run_module(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "transformer", *args], check=False,
                          capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    """A tiny reverse model trained once for the tests below (about 2 s)."""
    folder = str(tmp_path_factory.mktemp("reverse"))
    from contextlib import redirect_stdout
    from io import StringIO
    output = StringIO()
    with redirect_stdout(output):
        assert main([*TINY_REVERSE, "--steps", "300", "--out", folder]) == 0
    return folder, output.getvalue()


# ---------------------------------------------------------------------- learning
def test_reverse_fast_loss_falls_and_held_out_sequences_come_out_reversed(reverse_run):
    _, output = reverse_run
    losses = losses_in(output)
    assert len(losses) == 6 and losses[-1] < 0.05 * losses[0]
    assert "tok/s" in output and "left" in output
    accuracy = float(output.split("exact-sequence accuracy ")[1].split("%")[0])
    assert accuracy >= 95.0


def test_generate_reverses_a_prompt(reverse_run):
    folder, _ = reverse_run
    result = run_module("generate", "--ckpt", folder, "--prompt", "abcdef")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fedcba"


def test_checkpoint_holds_everything_a_resume_needs(reverse_run):
    folder, _ = reverse_run
    ckpt = load_checkpoint(folder)
    assert set(ckpt) >= {"model", "optimizer", "schedule", "step", "rng", "opts",
                         "model_config", "tokenizer"}
    assert ckpt["step"] == 300 and ckpt["schedule"]["step_num"] == 300
    model, tokenizer, opts = model_from_checkpoint(ckpt)
    assert model.config["src_vocab"] == tokenizer.vocab_size == 11
    assert opts["task"] == "reverse" and tokenizer.decode(tokenizer.encode("abc")) == "abc"
    assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]


def test_charlm_fast_validation_loss_falls(tmp_path, capsys):
    assert main(["train", "--task", "charlm", "--text", GPL, "--steps", "80",
                 "--seq-len", "32", "--d-model", "32", "--n-heads", "4", "--n-layers", "1",
                 "--d-ff", "64", "--batch-size", "16", "--lr", "3e-3", "--warmup", "10",
                 "--eval-every", "40", "--log-every", "40", "--out", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    val = [float(line.split("validation loss ")[1]) for line in output.splitlines()
           if "validation loss" in line]
    vocab = len(json.loads(load_checkpoint(str(tmp_path))["tokenizer"])["chars"]) + 3
    assert val[0] == pytest.approx(math.log(vocab), abs=0.3)   # untrained: near uniform
    assert val[-1] < val[0] - 0.5
    assert "sample: " in output


# What DecoderLM's `config` dict held before LMConfig, as runs saved it in model_config.
OLD_MODEL_CONFIGS = [
    {"vocab": 9, "d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "max_len": 8,
     "dropout": 0.1, "tie_weights": False, "positional": "learned", "activation": "gelu",
     "style": "gpt"},
    {"vocab": 9, "d_model": 16, "n_heads": 4, "n_layers": 2, "d_ff": 48, "max_len": 8,
     "dropout": 0.0, "tie_weights": True, "positional": "rope", "activation": "silu",
     "style": "llama", "n_kv_heads": 2, "rope_theta": 500.0, "norm_eps": 1e-5},
]


@pytest.mark.parametrize("old_config", OLD_MODEL_CONFIGS, ids=["gpt", "llama"])
def test_a_charlm_run_saved_before_lm_config_still_loads(old_config, tmp_path):
    mt.manual_seed(0)
    model = DecoderLM(LMConfig(**old_config))
    tokenizer = CharTokenizer("abcdef")
    mt.save({"model": dict(model.state_dict()), "opts": json.dumps({"task": "charlm"}),
             "model_config": json.dumps(old_config),
             "tokenizer": json.dumps(tokenizer.to_dict())}, str(tmp_path / CHECKPOINT))
    loaded, _, _ = model_from_checkpoint(load_checkpoint(str(tmp_path)))
    assert loaded.config == model.config
    assert {name: getattr(loaded.config, name) for name in old_config} == old_config
    ids = np.array([[3, 4, 5]])
    np.testing.assert_array_equal(loaded.eval()(ids).data, model.eval()(ids).data)


# ---------------------------------------------------------------------- resume
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, capsys):
    # Dropout on, so the restored random state matters as well as the data order.
    args = [*TINY_REVERSE, "--steps", "24", "--dropout", "0.1", "--ckpt-every", "5"]
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    assert main([*args, "--out", straight]) == 0
    assert main([*args, "--out", stopped, "--stop-after", "11"]) == 0
    assert load_checkpoint(stopped)["step"] == 11
    assert main([*args, "--out", stopped, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    a, b = load_checkpoint(straight), load_checkpoint(stopped)
    assert a["step"] == b["step"] == 24
    for name, value in a["model"].items():
        np.testing.assert_array_equal(value, b["model"][name], err_msg=name)
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, b["optimizer"]["state"][index][key])
    assert a["rng"] == b["rng"]


# ---------------------------------------------------------------------- errors
def test_unknown_prompt_character_is_a_clear_error(reverse_run):
    folder, _ = reverse_run
    result = run_module("generate", "--ckpt", folder, "--prompt", "abz")
    assert result.returncode == 2
    assert "CharTokenizer.encode: character 'z' (U+007A) at position 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_and_missing_text(tmp_path, capsys):
    assert main(["generate", "--ckpt", str(tmp_path / "nowhere"), "--prompt", "a"]) == 2
    assert "checkpoint: no checkpoint at" in capsys.readouterr().err
    assert main(["train", "--task", "charlm", "--steps", "2", "--out", str(tmp_path)]) == 2
    assert "--task charlm needs --text FILE" in capsys.readouterr().err


# ------------------------------------------------ full runs (about 40 s and 60 s)
def test_reverse_full_reaches_99_percent_on_held_out(tmp_path):
    """The stated bar: length-10 sequences over 10 symbols, >= 99% exact on 1000 held-out
    sequences never trained on (about 40 s on 2 cores: 700 steps reach 100%)."""
    began = time.perf_counter()
    result = run_module("train", "--task", "reverse", "--steps", "700", "--out",
                        str(tmp_path), "--log-every", "350", "--eval-every", "700")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("final: held-out exact-sequence accuracy ")[1]
                     .split("%")[0])
    print(result.stdout, f"wall time {time.perf_counter() - began:.0f}s")
    assert accuracy >= 99.0


def test_charlm_on_gpl3_falls_and_writes_english_words(tmp_path):
    """The stated bar on a real English text (GPL-3, 35 KB, shipped with Debian): validation
    loss falls clearly, and greedy generation writes recognisable words (about 60 s)."""
    if not os.path.exists(GPL):
        pytest.skip(f"{GPL} is not on this machine")
    result = run_module("train", "--task", "charlm", "--text", GPL, "--steps", "500",
                        "--eval-every", "500", "--log-every", "250", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    val = [float(line.split("validation loss ")[1]) for line in result.stdout.splitlines()
           if "validation loss" in line]
    assert val[-1] < val[0] - 1.5, val
    generated = run_module("generate", "--ckpt", str(tmp_path), "--prompt", "You may ",
                           "--temperature", "0", "--max-new-tokens", "120")
    assert generated.returncode == 0, generated.stderr
    words = set(generated.stdout.lower().replace(",", " ").split())
    assert len(words & {"the", "of", "to", "or", "and", "work", "program", "covered",
                        "license", "in", "with", "you", "that"}) >= 4, generated.stdout


def test_held_out_set_may_not_swallow_short_lengths(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["train", "--task", "reverse", "--seq-len", "6", "--min-len", "2",
                 "--n-symbols", "6", "--steps", "2", "--out", str(folder)]) == 2
    assert not folder.exists()
    assert ("SequenceTask: 1000 held-out sequences would take more than 10% of the 36 "
            "sequences of length 2 over 6 symbols") in capsys.readouterr().err


# ---------------------------------------------------------------------- bad settings
TINY = ["train", "--task", "reverse", "--seq-len", "6", "--n-symbols", "8", "--d-model", "16",
        "--n-heads", "2", "--n-layers", "1", "--d-ff", "32", "--batch-size", "16",
        "--warmup", "5", "--seed", "3"]


@pytest.mark.parametrize("option, value, message", [
    ("--ckpt-every", "0", "argument --ckpt-every: must be >= 1, got 0"),
    ("--log-every", "0", "argument --log-every: must be >= 1, got 0"),
    ("--steps", "0", "argument --steps: must be >= 1, got 0"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1, got 0"),
    ("--eval-every", "-1", "argument --eval-every: must be >= 0, got -1"),
    ("--stop-after", "-2", "argument --stop-after: must be >= 1, got -2"),
    ("--steps", "1.5", "argument --steps: expected a whole number, got '1.5'"),
    ("--lr", "0", "argument --lr: must be a finite number > 0, got 0"),
    ("--lr", "nan", "argument --lr: must be a finite number > 0, got nan"),
])
def test_out_of_range_options_are_refused_by_the_parser(tmp_path, capsys, option, value,
                                                        message):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, option, value, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_eval_every_zero_still_means_only_at_the_end(tmp_path, capsys):
    assert main([*TINY, "--steps", "4", "--eval-every", "0", "--log-every", "2",
                 "--out", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert output.count("accuracy") == 1 and "final: held-out" in output


def test_bad_option_from_the_shell_exits_2_without_a_traceback(tmp_path):
    result = run_module(*TINY, "--ckpt-every", "0", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "argument --ckpt-every: must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr and "ZeroDivisionError" not in result.stderr


# ---------------------------------------------------------------------- divergence
@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_a_diverging_run_stops_before_overwriting_the_last_good_checkpoint(tmp_path, capsys):
    folder = tmp_path / "diverged"
    assert main([*TINY, "--lr", "1e9", "--steps", "40", "--ckpt-every", "2", "--log-every",
                 "1", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    found = re.search(r"error: train: the loss is (nan|inf|-inf) at step (\d+): the run "
                      r"diverged\. Stopped without saving, so (\S+) still holds step (\d+)\. "
                      r"Start a new run \(without --resume\) with a lower --lr \(now 1e\+09\) "
                      r"or --clip \(now 1\)", err)
    assert found, err
    failed_at, kept = int(found.group(2)), int(found.group(4))
    assert found.group(3) == str(folder / "checkpoint.npz")
    assert 2 <= kept < failed_at <= 40
    ckpt = load_checkpoint(str(folder))
    assert ckpt["step"] == kept
    for name, value in ckpt["model"].items():
        assert np.isfinite(value).all(), name
    model_from_checkpoint(ckpt)  # and it still rebuilds a model


def test_non_finite_parameters_are_never_saved(tmp_path):
    from transformer.train import check_finite_parameters, make_model
    opts = {"task": "reverse", "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16,
            "dropout": 0.0, "seq_len": 4, "norm_first": False, "lr": 0.5, "clip": 2.0,
            "out": str(tmp_path)}
    model = make_model(opts, vocab_size=7)
    check_finite_parameters(model, 3, opts, {"saved_step": None})  # finite: no error
    model.out.bias.data[1] = np.inf
    with pytest.raises(FloatingPointError, match=r"train: parameter out.bias is not finite "
                                                 r"at step 3: the run diverged\. Stopped "
                                                 r"without saving, so no checkpoint was saved\. "
                                                 r"Start a new run .* --lr \(now 0.5\) or "
                                                 r"--clip \(now 2\)"):
        check_finite_parameters(model, 3, opts, {"saved_step": None})


# ---------------------------------------------------------------------- Ctrl-C
def interrupt_at(monkeypatch, stop_step):
    """Make training raise KeyboardInterrupt (as Ctrl-C does) when it reaches `stop_step`."""
    import transformer.train as train_module
    real_batch_loss = train_module.batch_loss

    def batch_loss(model, task, step, batch_size):
        if step == stop_step:
            raise KeyboardInterrupt
        return real_batch_loss(model, task, step, batch_size)

    monkeypatch.setattr(train_module, "batch_loss", batch_loss)


def test_ctrl_c_prints_a_resume_hint_and_exits_130(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    args = [*TINY, "--steps", "12", "--ckpt-every", "4", "--log-every", "100",
            "--out", str(folder)]
    interrupt_at(monkeypatch, 6)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err == (f"interrupted (KeyboardInterrupt): {folder / 'checkpoint.npz'} holds "
                   f"step 4; run the same command with --resume to continue from step 4\n")
    assert load_checkpoint(str(folder))["step"] == 4
    # interrupted again after resuming: the hint counts from the resumed checkpoint
    monkeypatch.undo()
    interrupt_at(monkeypatch, 9)
    assert main([*args, "--resume"]) == 130
    assert "continue from step 8\n" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert load_checkpoint(str(folder))["step"] == 12


def test_ctrl_c_before_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    interrupt_at(monkeypatch, 1)
    assert main([*TINY, "--steps", "12", "--ckpt-every", "4", "--out",
                 str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == ("interrupted (KeyboardInterrupt) before the first "
                                       "checkpoint was saved: run the same command again to "
                                       "start over\n")


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs POSIX signals")
def test_real_ctrl_c_leaves_a_loadable_checkpoint_and_no_traceback(tmp_path):
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "transformer", *TINY, "--steps", "3000",
                                "--ckpt-every", "3", "--log-every", "1", "--out", str(folder)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logged = 0
    for line in process.stdout:
        logged += "| loss " in line
        if logged >= 10:
            break
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    err = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    step = int(re.search(r"--resume to continue from step (\d+)\n$", err).group(1))
    assert step >= 9 and step % 3 == 0
    assert load_checkpoint(str(folder))["step"] == step
