"""Training and generation behind `python -m transformer train|generate`.

A run lives in one folder: `checkpoint.npz` (model, optimizer, schedule, step, the random
generator's state, and the run's configuration and tokenizer as JSON), rewritten
atomically every `--ckpt-every` steps and at the end. `--resume` continues from it and
ends with the same parameters as an uninterrupted run: batches are a function of
(seed, step) and dropout's generator state is restored.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

import microtensor as mt
import microtensor.functional as F
from microtensor import optim
from microtensor.errors import op_error
from microtensor.files import read_text_capped

from . import hub
from .bpe import MERGES, VOCAB, BPETokenizer
from .config import LMConfig
from .data import CharLMTask, SequenceTask
from .encoder_decoder import Transformer
from .lm import DecoderLM
from .progress import clock as _clock
from .run_folder import (
    CHECKPOINT,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng,
    run_options,
    run_step,
)


# ---------------------------------------------------------------------- building a run
def make_task(opts: dict, tokenizer=None):
    """The task the options ask for: a sequence task (reverse, copy, ...) or a character LM on
    a text file."""
    if opts["task"] in SequenceTask.KINDS:
        return SequenceTask(opts["task"], n_symbols=opts["n_symbols"], min_len=opts["min_len"],
                            max_len=opts["seq_len"], seed=opts["seed"])
    if opts["task"] == "charlm":
        if not opts.get("text"):
            raise op_error("train", "--task charlm needs --text FILE (a plain-text file)")
        # a regular file of at most 64 MB: a FIFO would hang the run, /dev/zero fill memory
        text = read_text_capped(opts["text"], "train", what="--text file", errors="replace",
                                fix="give --text a plain-text file")
        return CharLMTask(text, block_size=opts["seq_len"], seed=opts["seed"],
                          tokenizer=tokenizer)
    raise op_error("train", f"unknown task {opts['task']!r}",
                   fix="choose reverse, copy or charlm")


def make_model(opts: dict, vocab_size: int):
    """The model a run trains: an encoder-decoder for sequence tasks, a DecoderLM for text."""
    common = {"d_model": opts["d_model"], "n_heads": opts["n_heads"],
              "n_layers": opts["n_layers"], "d_ff": opts["d_ff"], "dropout": opts["dropout"]}
    if opts["task"] == "charlm":
        return DecoderLM(LMConfig.gpt2(vocab_size, max_len=opts["seq_len"], **common))
    return Transformer(vocab_size, vocab_size, max_len=opts["seq_len"] + 2, pad_id=0,
                       norm_first=opts["norm_first"], **common)


# ---------------------------------------------------------------------- loss and metrics
def batch_loss(model, task, step: int, batch_size: int):
    """(loss, tokens in the batch) for one training step."""
    if isinstance(task, SequenceTask):
        src, tgt_in, tgt_out = task.batch(step, batch_size)
        logits = model(src, tgt_in)
        loss = F.cross_entropy(logits, tgt_out, ignore_index=task.pad_id)
        return loss, src.size + tgt_in.size
    inputs, targets = task.batch(step, batch_size)
    return F.cross_entropy(model(inputs), targets), inputs.size


def sequence_accuracy(model, task: SequenceTask, seqs=None, batch_size: int = 500) -> float:
    """Fraction of sequences (default: the held-out set) decoded exactly, eos included."""
    seqs = task.heldout if seqs is None else seqs
    correct = 0
    for i in range(0, len(seqs), batch_size):
        src, _, tgt_out = task.encode_pairs(seqs[i:i + batch_size])
        out = model.greedy_decode(src, max_len=task.max_len + 1, bos=task.bos_id,
                                  eos=task.eos_id)
        padded = np.full(tgt_out.shape, task.pad_id, np.int64)
        padded[:, :out.shape[1]] = out
        correct += int((padded == tgt_out).all(axis=1).sum())
    return correct / len(seqs)


@mt.no_grad()
def validation_loss(model, task: CharLMTask, batch_size: int = 32) -> float:
    """The mean cross-entropy per token over the task's validation text, without dropout."""
    total, count = 0.0, 0
    with mt.dropout_off():
        for inputs, targets in task.validation_batches(batch_size):
            total += float(F.cross_entropy(model(inputs), targets, reduction="sum").item())
            count += targets.size
    return total / count


def evaluate(model, task) -> str:
    """One line on how the model does on held-out data: sequence accuracy, or validation loss."""
    if isinstance(task, SequenceTask):
        return f"held-out exact-sequence accuracy {sequence_accuracy(model, task):.2%}"
    return f"validation loss {validation_loss(model, task):.4f}"


# ---------------------------------------------------------------------- the loop
def save_run(folder, model, opt, schedule, step, opts, tokenizer) -> None:
    """One atomic checkpoint with everything a resume needs."""
    config = asdict(model.config) if isinstance(model, DecoderLM) else model.config
    mt.save({"model": dict(model.state_dict()), "optimizer": opt.state_dict(),
             "schedule": schedule.state_dict(), "step": step,
             "rng": json.dumps(mt.generator().bit_generator.state),
             "opts": json.dumps(opts), "model_config": json.dumps(config),
             "tokenizer": json.dumps(tokenizer.to_dict())},
            os.path.join(folder, CHECKPOINT))


def diverged(what: str, step: int, opts: dict, progress: dict) -> FloatingPointError:
    """The error that stops a run whose loss or parameters stopped being finite."""
    path = os.path.join(opts["out"], CHECKPOINT)
    kept = ("no checkpoint was saved" if progress["saved_step"] is None
            else f"{path} still holds step {progress['saved_step']}")
    return op_error("train", f"{what} at step {step}: the run diverged. Stopped without "
                    f"saving, so {kept}", FloatingPointError,
                    fix=f"start a new run (without --resume) with a lower --lr (now "
                    f"{opts['lr']:g}) or --clip (now {opts['clip']:g})")


def check_finite_parameters(model, step: int, opts: dict, progress: dict) -> None:
    """Refuse to save NaN or inf parameters over the last good checkpoint."""
    for name, param in model.named_parameters():
        if not np.isfinite(param.data).all():
            raise diverged(f"parameter {name} is not finite", step, opts, progress)


def train(opts: dict, log=print, monitor=None, progress_bar=None) -> dict:
    """Train as `opts` says (the CLI's options as a dict); returns a summary dict.

    `monitor(model, optimizer)`, when given, makes the object that watches each step
    (a `viz.TrainingMonitor`: its `begin_step(step)` runs before the step's forward pass,
    `end_step(loss)` after the optimizer's step). `progress_bar.update(done, loss)`,
    when given, runs after each step (`transformer.progress.ProgressBar`).

    A loss or parameter that is NaN or inf stops the run with a FloatingPointError
    before it can overwrite the last good checkpoint. A KeyboardInterrupt (Ctrl-C) passes
    through with `checkpoint_step` set: the step the checkpoint on disk holds (None if
    this run saved none), where `--resume` continues.
    """
    progress = {"saved_step": None}
    try:
        return _train(opts, log, progress, monitor, progress_bar)
    except KeyboardInterrupt as interrupt:
        interrupt.checkpoint_step = progress["saved_step"]
        raise


@dataclass
class Run:
    """What a training run works with: its options (a resumed run's are the saved ones),
    task, tokenizer, model, optimizer and schedule, and the step it starts from."""
    opts: dict
    task: SequenceTask | CharLMTask
    tokenizer: object
    model: DecoderLM | Transformer
    opt: optim.AdamW
    schedule: optim.CosineLR
    start: int = 0


def open_run(opts: dict, log, progress: dict) -> Run:
    """A new run as `opts` says, or with `resume` the run saved in `opts["out"]`, with
    its model, optimizer, schedule, step and random state restored."""
    folder = opts["out"]
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise op_error("train", f"--out '{folder}' is a file, not a folder",
                       FileExistsError, "give --out the name of a folder (it is created)")
    ckpt = None
    if opts.get("resume") and os.path.lexists(os.path.join(folder, CHECKPOINT)):
        ckpt = load_checkpoint(folder)
        saved = run_options(ckpt, resumed=True)
        # The run is defined by its checkpoint; only the length may change.
        saved.update(steps=opts["steps"], stop_after=opts.get("stop_after"),
                     log_every=opts["log_every"], out=folder)
        opts = saved
    mt.manual_seed(opts["seed"])
    if ckpt is None:
        task = make_task(opts)
        model = make_model(opts, task.vocab_size)
    else:   # sizes checked against the stored weights before the model is built
        model, tokenizer, _ = model_from_checkpoint(ckpt)
        task = make_task(opts, tokenizer)
    os.makedirs(folder, exist_ok=True)
    opt = optim.AdamW(model.parameters(), lr=opts["lr"], betas=(0.9, 0.98),
                      weight_decay=opts["weight_decay"])
    schedule = optim.CosineLR(opt, warmup=min(opts["warmup"], opts["steps"] - 1),
                              total=opts["steps"], min_lr=opts["lr"] / 10)
    run = Run(opts, task, task.tokenizer, model, opt, schedule)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        if schedule.total != opts["steps"]:
            schedule.total = opts["steps"]
            opt.lr = schedule.get_lr()
        restore_rng(ckpt)
        run.start = progress["saved_step"] = run_step(ckpt)
        log(f"resumed from {os.path.join(folder, CHECKPOINT)} at step {run.start}")
    return run


def _train(opts: dict, log, progress: dict, monitor=None, progress_bar=None) -> dict:
    run = open_run(opts, log, progress)
    watcher = None if monitor is None else monitor(run.model, run.opt)
    opts, model, opt, task, start = run.opts, run.model, run.opt, run.task, run.start
    n_params = sum(p.size for p in model.parameters())
    log(f"{opts['task']}: {type(model).__name__} with {n_params:,} parameters, vocab "
        f"{task.vocab_size}, steps {start}..{opts['steps']}")

    end = opts["steps"]
    if opts.get("stop_after"):
        end = min(end, start + opts["stop_after"])
    if opts["eval_every"] and start == 0:
        log(f"step      0: {evaluate(model, task)}")
    model.train()
    began = last_time = time.perf_counter()
    losses, tokens = [], 0

    def save(step: int) -> None:
        check_finite_parameters(model, step, opts, progress)
        save_run(opts["out"], model, opt, run.schedule, step, opts, run.tokenizer)
        progress["saved_step"] = step

    for step in range(start, end):
        loss, n_tokens = _train_step(run, step, progress, watcher)
        losses.append(loss)
        tokens += n_tokens
        done = step + 1
        if progress_bar is not None:
            progress_bar.update(done, losses[-1])
        if done % opts["log_every"] == 0 or done == end:
            now = time.perf_counter()
            rate = (done - start) / (now - began)
            log(f"step {done:6d}/{opts['steps']} | loss {np.mean(losses):.4g} | lr "
                f"{opt.lr:.2e} | {tokens / (now - last_time):8,.0f} tok/s | "
                f"{_clock(now - began)} elapsed, ~{_clock((opts['steps'] - done) / rate)} left")
            losses, tokens, last_time = [], 0, now
        if opts["eval_every"] and done % opts["eval_every"] == 0 and done != end:
            log(f"step {done:6d}: {evaluate(model, task)}")
            model.train()
            last_time = time.perf_counter()  # tok/s counts training time only
        if done % opts["ckpt_every"] == 0 and done != end:
            save(done)
    final_step = max(end, start)
    save(final_step)
    return finish_run(run, final_step, time.perf_counter() - began, log)


def _train_step(run: Run, step: int, progress: dict, watcher=None) -> tuple[float, int]:
    """One update from the batch of `step`: its loss and how many tokens it held. A loss
    that is NaN or inf stops the run before the update."""
    if watcher is not None:
        watcher.begin_step(step + 1)
    loss, n_tokens = batch_loss(run.model, run.task, step, run.opts["batch_size"])
    if not math.isfinite(loss.item()):
        raise diverged(f"the loss is {loss.item()}", step + 1, run.opts, progress)
    loss.backward()
    optim.clip_grad_norm_(run.model.parameters(), run.opts["clip"])
    run.opt.step()
    run.schedule.step()
    run.opt.zero_grad()
    if watcher is not None:
        watcher.end_step(loss)
    return loss.item(), n_tokens


def finish_run(run: Run, final_step: int, seconds: float, log) -> dict:
    """The summary of a run that saved `final_step`: with the held-out accuracy or the
    validation loss (and a sample) when it reached its last step."""
    summary = {"step": final_step, "seconds": seconds}
    model, task, tokenizer = run.model, run.task, run.tokenizer
    if final_step == run.opts["steps"]:
        if isinstance(task, SequenceTask):
            summary["accuracy"] = sequence_accuracy(model, task)
            log(f"final: held-out exact-sequence accuracy {summary['accuracy']:.2%} "
                f"({len(task.heldout)} sequences)")
        else:
            summary["val_loss"] = validation_loss(model, task)
            log(f"final: validation loss {summary['val_loss']:.4f}")
            sample = model.generate([tokenizer.encode(task_prompt(task))], 200,
                                    temperature=0.8, top_k=10, seed=run.opts["seed"])
            text = tokenizer.decode(sample[0])   # any characters the --text file held:
            # escape those a terminal would act on (ESC, NUL, \r), keep lines and tabs
            log("sample: " + "".join(char if char.isprintable() or char in "\n\t"
                                     else repr(char)[1:-1] for char in text))
    log(f"saved {os.path.join(run.opts['out'], CHECKPOINT)} at step {final_step} "
        f"({_clock(seconds)})")
    return summary


def task_prompt(task: CharLMTask) -> str:
    """A prompt for samples: the start of the validation text, up to a word boundary."""
    text = task.tokenizer.decode(task.val_ids[:min(40, task.block_size // 2)])
    return text[:text.rfind(" ") + 1] or text


# ---------------------------------------------------------------------- generation
def generate(opts: dict) -> str:
    """Text generated from a checkpoint for `opts['prompt']` (or `opts['prompt_ids']`)
    (the CLI's generate). `opts['ckpt']` is a run folder or a Hugging Face directory."""
    if os.path.lexists(os.path.join(opts["ckpt"], hub.pretrained.CONFIG)):
        return generate_pretrained(opts)
    ckpt = load_checkpoint(opts["ckpt"])
    model, tokenizer, run = model_from_checkpoint(ckpt)
    model.eval()
    prompt_ids = opts.get("prompt_ids")
    if run["task"] == "charlm":
        check_max_new_tokens(opts["max_new_tokens"], model)
        ids = prompt_ids or tokenizer.encode(opts["prompt"])
        out = model.generate([ids], opts["max_new_tokens"], temperature=opts["temperature"],
                             top_k=opts["top_k"], seed=opts["seed"])
        return tokenizer.decode(out[0])
    ids = prompt_ids or tokenizer.encode(opts["prompt"])
    if not 1 <= len(ids) <= run["seq_len"]:
        raise op_error("generate", f"the {run['task']} model takes 1 to {run['seq_len']} "
                       f"symbols, got a prompt of {len(ids)}")
    out = model.greedy_decode([ids], max_len=run["seq_len"] + 1, bos=tokenizer.bos_id,
                              eos=tokenizer.eos_id)
    return tokenizer.decode(out[0])



# What generation may keep in memory: each new token's logits (vocab float32s) and id.
GENERATE_MEMORY = 2**30


def check_max_new_tokens(max_new_tokens: int, model: DecoderLM) -> None:
    """Refuse a --max-new-tokens whose tokens' logits would pass GENERATE_MEMORY (1 GiB):
    past max_len the model slides its window, so positions do not bound the length."""
    vocab = model.config.vocab
    most = GENERATE_MEMORY // (4 * vocab + 16)
    if max_new_tokens > most:
        raise op_error("generate", f"--max-new-tokens {max_new_tokens:,} is more than this "
                       f"model generates within 1 GiB: at most {most:,} (each new token "
                       f"keeps {vocab:,} logits; the model reads {model.config.max_len:,} "
                       "positions at a time)",
                       fix=f"ask for at most {most:,}, e.g. --max-new-tokens "
                       f"{min(most, model.config.max_len)}")


def generate_pretrained(opts: dict) -> str:
    """Generation from a Hugging Face GPT-2 directory: text in and out when it has
    vocab.json and merges.txt, otherwise ids in (--prompt-ids) and ids out."""
    folder = opts["ckpt"]
    model = DecoderLM.from_pretrained(folder)
    has_tokenizer = all(os.path.isfile(os.path.join(folder, name)) for name in (VOCAB, MERGES))
    tokenizer = BPETokenizer.from_pretrained(folder) if has_tokenizer else None
    if opts.get("prompt_ids") is not None:
        ids = opts["prompt_ids"]
    elif tokenizer is None:
        raise op_error("generate", f"'{folder}' has no {VOCAB} and {MERGES} to encode the "
                       "prompt with", FileNotFoundError,
                       "add the tokenizer files, or give token ids: --prompt-ids 1,2,3")
    else:
        ids = tokenizer.encode(opts["prompt"])
    check_max_new_tokens(opts["max_new_tokens"], model)
    vocab = model.config.vocab
    if not ids or max(ids) >= vocab:
        raise op_error("generate", f"the prompt's ids must be 0..{vocab - 1} (the "
                       f"model's vocabulary), got {ids[:20]}")
    out = model.generate([ids], opts["max_new_tokens"], temperature=opts["temperature"],
                         top_k=opts["top_k"], seed=opts["seed"])[0]
    return tokenizer.decode(out) if tokenizer else ",".join(str(int(i)) for i in out)
