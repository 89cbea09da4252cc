"""Threads: `no_grad`, `enable_grad` and `detect_anomaly` are per thread, and a model in eval
mode can serve inference from several threads at once with the results of sequential calls.

Barriers make the threads overlap on purpose: each round, both threads are inside their
mode (or their forward pass) at the same time.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import microtensor as mt
from transformer import DecoderLM, LMConfig, Transformer

ROUNDS = 25


def run_together(*workers, timeout=60):
    """Start one thread per worker and join them all, re-raising the first failure."""
    failures = []

    def guard(worker):
        try:
            worker()
        except BaseException as error:  # noqa: BLE001 - reported in the main thread
            failures.append(error)

    threads = [threading.Thread(target=guard, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a thread hung (deadlock?)"
    if failures:
        raise failures[0]


# ---------------------------------------------------------------------- modes
def test_no_grad_in_one_thread_never_disables_grad_in_another():
    x = mt.tensor(np.arange(3.0), requires_grad=True)
    both_inside = threading.Barrier(2)
    seen = {"no_grad": [], "grad": []}

    def inference():
        with mt.no_grad():
            for _ in range(ROUNDS):
                both_inside.wait(10)   # the other thread is computing right now
                seen["no_grad"].append(((x * 2.0).requires_grad, mt.is_grad_enabled()))
                both_inside.wait(10)

    def training():
        for _ in range(ROUNDS):
            both_inside.wait(10)
            y = (x * x).sum()       # while the other thread sits inside no_grad
            seen["grad"].append((y.requires_grad, mt.is_grad_enabled()))
            x.grad = None
            y.backward()
            np.testing.assert_array_equal(x.grad, 2 * np.arange(3.0))
            both_inside.wait(10)

    run_together(inference, training)
    assert seen["no_grad"] == [(False, False)] * ROUNDS
    assert seen["grad"] == [(True, True)] * ROUNDS
    assert mt.is_grad_enabled()


def test_enable_grad_inside_no_grad_stays_in_its_thread():
    x = mt.tensor([1.0], requires_grad=True)
    barrier = threading.Barrier(2)
    seen = {}

    def outer():
        with mt.no_grad():
            barrier.wait(10)        # 1: the other thread has turned grad back on
            seen["outer"] = (x * 2.0).requires_grad
            barrier.wait(10)        # 2

    def inner():
        with mt.no_grad(), mt.enable_grad():
            barrier.wait(10)
            seen["inner"] = (x * 2.0).requires_grad
            barrier.wait(10)
        seen["inner_after"] = mt.is_grad_enabled()

    run_together(outer, inner)
    assert seen == {"outer": False, "inner": True, "inner_after": True}


def test_a_new_thread_starts_with_the_defaults_whatever_its_creator_is_inside():
    seen = []
    with mt.no_grad(), mt.detect_anomaly():
        run_together(lambda: seen.append((mt.is_grad_enabled(),
                                          mt.autograd.is_anomaly_enabled())))
        assert not mt.is_grad_enabled() and mt.autograd.is_anomaly_enabled()
    assert seen == [(True, False)]


def test_detect_anomaly_raises_only_in_its_own_thread_while_both_make_nans():
    barrier = threading.Barrier(2)
    outcomes = {}

    def watched():
        with mt.detect_anomaly(), np.errstate(invalid="ignore"):
            barrier.wait(10)
            try:
                mt.tensor([-1.0, 4.0]).sqrt()
                outcomes["watched"] = "no error"
            except FloatingPointError as error:
                outcomes["watched"] = str(error)
            barrier.wait(10)

    def unwatched():
        with np.errstate(invalid="ignore"):
            barrier.wait(10)
            out = mt.tensor([-1.0, 4.0]).sqrt()   # at the same moment, no anomaly mode
            outcomes["unwatched"] = out.data.tolist()
            barrier.wait(10)

    run_together(watched, unwatched)
    assert outcomes["watched"].startswith("sqrt produced nan in its forward pass")
    assert np.isnan(outcomes["unwatched"][0]) and outcomes["unwatched"][1] == 2.0


def test_anomaly_in_backward_is_raised_in_the_thread_that_runs_it():
    barrier = threading.Barrier(2)
    outcomes = {}

    def backward_of_sqrt_at_zero(label, watch):
        x = mt.tensor([0.0, 1.0], requires_grad=True)
        with np.errstate(divide="ignore"):
            if watch:
                with mt.detect_anomaly():
                    y = x.sqrt().sum()
                    barrier.wait(10)
                    try:
                        y.backward()
                        outcomes[label] = "no error"
                    except FloatingPointError as error:
                        outcomes[label] = str(error)
            else:
                y = x.sqrt().sum()
                barrier.wait(10)
                y.backward()
                outcomes[label] = x.grad.tolist()

    run_together(lambda: backward_of_sqrt_at_zero("watched", True),
                 lambda: backward_of_sqrt_at_zero("plain", False))
    assert outcomes["watched"].startswith("sqrt produced inf in its backward pass")
    assert "test_threads.py" in outcomes["watched"]      # names the line that made the op
    assert outcomes["plain"] == [np.inf, 0.5]


# ---------------------------------------------------------------------- shared models
@pytest.fixture(scope="module")
def lm():
    mt.manual_seed(0)
    model = DecoderLM(LMConfig.gpt2(vocab=23, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                    max_len=16))
    return model.eval()


def prompts(seed, count=6):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 23, (2, int(rng.integers(1, 10)))) for _ in range(count)]


def test_decoder_lm_forward_from_two_threads_matches_sequential_calls(lm):
    batches = {"a": prompts(1), "b": prompts(2)}
    with mt.no_grad():
        expected = {k: [lm(ids).data.copy() for ids in v] for k, v in batches.items()}
    got = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(key):
        with mt.no_grad():
            for _ in range(3):
                for ids in batches[key]:
                    barrier.wait(10)   # both forward passes run at the same time
                    got[key].append(lm(ids).data.copy())

    run_together(lambda: worker("a"), lambda: worker("b"))
    for key in batches:
        for i, logits in enumerate(got[key]):
            assert np.array_equal(logits, expected[key][i % len(batches[key])]), (key, i)


def test_cached_generation_from_two_threads_matches_sequential_calls(lm):
    jobs = [(ids, seed) for seed, ids in enumerate(prompts(3, count=4) + prompts(4, count=4))]

    def generate(job):
        ids, seed = job
        return lm.generate(ids, max_new_tokens=12, temperature=0.9, top_k=8, seed=seed)

    sequential = [generate(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(generate, jobs))
    for i, (a, b) in enumerate(zip(sequential, concurrent)):
        assert np.array_equal(a, b), f"job {i} differs"
    assert not lm.training


def test_encoder_decoder_greedy_decode_from_two_threads():
    mt.manual_seed(1)
    model = Transformer(13, 13, d_model=32, n_heads=4, n_layers=1, d_ff=64, max_len=12,
                        dropout=0.0).eval()
    sources = [np.random.default_rng(s).integers(3, 13, (3, 6)) for s in range(6)]
    decode = lambda src: model.greedy_decode(src, max_len=8, bos=1, eos=2)
    sequential = [decode(src) for src in sources]
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(decode, sources * 2))
    for i, out in enumerate(concurrent):
        assert np.array_equal(out, sequential[i % len(sources)]), f"source {i} differs"


def test_inference_in_one_thread_while_another_trains(lm):
    """A thread serving no_grad inference does not stop another thread's training step
    from recording its graph, and the gradients equal a training step run alone."""
    mt.manual_seed(5)
    student = DecoderLM(LMConfig.gpt2(vocab=23, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                      max_len=16))
    ids = np.random.default_rng(7).integers(0, 23, (4, 9))

    def train_step():
        student.zero_grad()
        loss = mt.cross_entropy(student(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        return {name: p.grad.copy() for name, p in student.named_parameters()}

    alone = train_step()
    barrier = threading.Barrier(2)
    box = {}

    def serve():
        with mt.no_grad():
            for ids_ in prompts(9):
                barrier.wait(10)
                lm(ids_)

    def train():
        for _ in prompts(9):
            barrier.wait(10)
            box["grads"] = train_step()

    run_together(serve, train)
    assert box["grads"].keys() == alone.keys()
    for name, grad in alone.items():
        assert np.array_equal(box["grads"][name], grad), name
