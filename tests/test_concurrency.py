"""One Model shared by several Python threads: calls run at the same time (each in an arena
of its own, the GIL released) and give exactly the results of serial calls. The throughput is
measured in benchmarks/bench_threads.py, never asserted here."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import qbinfer
from qbinfer import _core

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"
CALLERS = 4


def inputs(model, count: int, batch: int, seed: int = 0):
    h, w, c = model.input_shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, c, h, w)).astype(np.float32) for _ in range(count)]


def hammer(model, xs, expected, rounds: int):
    """CALLERS threads, each running every input `rounds` times in its own order; returns the
    mismatches (caller, input index) and the exceptions raised."""
    mismatches, errors = [], []
    start = threading.Barrier(CALLERS)

    def caller(k):
        try:
            start.wait()
            order = np.random.default_rng(k).permutation(len(xs))
            for _ in range(rounds):
                for i in order:
                    if not np.array_equal(model.run(xs[i]), expected[i]):
                        mismatches.append((k, int(i)))
        except Exception as e:  # reported below, with the thread that raised
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return mismatches, errors


@pytest.mark.parametrize(
    "threads, split, batch",
    [(1, "work", 1), (1, "work", 3), (2, "always", 1), (2, "always", 5), (3, "work", 4)],
)
def test_concurrent_calls_equal_serial_calls(threads, split, batch):
    # threads > 1: one call at a time gets the engine pool (split steps or one image per
    # thread), the others run on their own threads at the same time.
    model = _core.Model(str(DIGITS), threads, split=split)
    xs = inputs(model, 6, batch)
    expected = [model.run(x) for x in xs]
    mismatches, errors = hammer(model, xs, expected, rounds=8)
    assert not errors, errors
    assert not mismatches, mismatches
    # Arenas are kept for reuse: at most one per concurrent call (a batch run one image per
    # thread holds `threads` of them).
    assert 1 <= model.workspaces <= CALLERS + threads


def test_predict_from_several_threads_equals_serial():
    model = qbinfer.load(DIGITS, threads=1)
    h, w, _ = model.input_shape
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (h + 5, w + 3, 3), dtype=np.uint8) for _ in range(5)]
    expected = [model.predict(img, top_k=3) for img in images]
    results, errors = {}, []

    def caller(k):
        try:
            for i, img in enumerate(images):
                results[(k, i)] = model.predict(img, top_k=3)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (_, i), got in results.items():
        assert got == expected[i]


def test_calls_overlap_in_time():
    """Serialized calls (a lock, or the GIL held) never need a second arena; overlapping ones
    do. Calls repeat until two have overlapped, bounded by a generous deadline."""
    model = qbinfer.load(DIGITS, threads=1)
    x = inputs(model, 1, 64)[0]  # a batch long enough (milliseconds) to overlap easily
    assert model._core.workspaces == 1
    stop = time.monotonic() + 60
    start = threading.Barrier(CALLERS)

    def caller():
        start.wait()
        while model._core.workspaces < 2 and time.monotonic() < stop:
            model.run(x)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model._core.workspaces >= 2


def test_an_error_in_one_call_leaves_the_arena_pool_usable():
    model = qbinfer.load(DIGITS, threads=1)
    x = inputs(model, 1, 2)[0]
    want = model.run(x)
    with pytest.raises(qbinfer.ShapeError):
        model.run(x[:, :, :-1])
    np.testing.assert_array_equal(model.run(x), want)
