"""Threads: threads="auto" by default, counts above the usable CPUs capped with a warning, and
the per-step split (split="work"): a step too small to split runs on the calling thread
whatever the thread count, larger steps split over more threads, and results never depend
on any of it. Speeds are measured in benchmarks/bench_threads.py, never asserted here."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import qbinfer
from qbinfer import _core

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def digits_input(batch: int, seed: int = 0) -> np.ndarray:
    m = qbinfer.load(DIGITS, threads=1)
    h, w, c = m.input_shape
    return np.random.default_rng(seed).standard_normal((batch, c, h, w)).astype(np.float32)


@pytest.fixture(scope="module")
def large_model_path(tmp_path_factory):
    """qb_net_small at 224x224: steps large enough that some split and some do not."""
    pytest.importorskip("torch", reason="building the test model needs the tools extra")
    from conftest import convert_model, zoo_model

    model = zoo_model("qb_net_small", seed=3)
    path, _ = convert_model(model, tmp_path_factory.mktemp("threads"), "small224", (224, 224))
    return path


def test_auto_is_the_default_and_means_the_usable_cpus():
    assert _core.usable_cpus() == usable_cpus()
    assert qbinfer.load(DIGITS).threads == usable_cpus()
    assert qbinfer.load(DIGITS, threads="auto").threads == usable_cpus()
    assert qbinfer.Model(DIGITS).threads == usable_cpus()


def test_thread_count_above_the_cpus_is_capped_with_a_warning():
    too_many = usable_cpus() + 3
    with pytest.warns(RuntimeWarning, match=f"threads={too_many} is more than the"):
        m = qbinfer.load(DIGITS, threads=too_many)
    assert m.threads == usable_cpus()
    # The warning points at the caller's line, not into qbinfer.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qbinfer.load(DIGITS, threads=too_many)
    assert caught and caught[0].filename == __file__


def test_thread_count_within_the_cpus_is_kept_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert qbinfer.load(DIGITS, threads=1).threads == 1
        assert qbinfer.load(DIGITS, threads=np.int64(usable_cpus())).threads == usable_cpus()


@pytest.mark.parametrize(
    "threads, error",
    [
        (0, ValueError),
        (-2, ValueError),
        ("two", ValueError),
        ("AUTO", ValueError),
        (1.5, TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_thread_arguments(threads, error):
    with pytest.raises(error, match="threads"):
        qbinfer.load(DIGITS, threads=threads)


@pytest.mark.parametrize("threads", [2, 8, 64])
def test_small_steps_run_on_one_thread_whatever_the_count(threads):
    # _core takes the count as given (no cap), so a pool of 64 exists even on 2 CPUs.
    m = _core.Model(str(DIGITS), threads)
    steps = m.steps()
    assert steps and all(s["parts"] == 1 for s in steps), [
        (s["label"], s["work_us"], s["parts"]) for s in steps if s["parts"] != 1
    ]
    x = digits_input(1)
    np.testing.assert_array_equal(m.run(x), _core.Model(str(DIGITS), 1).run(x))


def test_split_always_splits_every_step():
    steps = _core.Model(str(DIGITS), 3, split="always").steps()
    assert all(s["parts"] == 3 for s in steps)
    with pytest.raises(ValueError, match="split must be"):
        _core.Model(str(DIGITS), 2, split="sometimes")


def test_one_thread_never_splits_and_starts_no_pool():
    m = _core.Model(str(DIGITS), 1)
    assert not m.uses_pool and all(s["parts"] == 1 for s in m.steps())


def test_more_work_never_gets_fewer_threads(large_model_path):
    for threads in (2, 4, 16):
        steps = _core.Model(large_model_path, threads).steps()
        assert all(1 <= s["parts"] <= threads for s in steps)
        by_work = sorted(steps, key=lambda s: s["work_us"])
        parts = [s["parts"] for s in by_work]
        assert parts == sorted(parts), [(s["label"], s["work_us"], s["parts"]) for s in by_work]
        # At 224 the heavy binary convs are worth splitting, the pools on small maps are not.
        assert parts[-1] > 1 and parts[0] == 1


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_results_do_not_depend_on_threads(large_model_path, threads, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    one = _core.Model(large_model_path, 1).run(x)
    for split in ("work", "always"):
        m = _core.Model(large_model_path, threads, split=split)
        for _ in range(2):  # the second call reuses the workers and arenas
            np.testing.assert_array_equal(m.run(x), one, err_msg=f"{threads} {split} {batch}")


def test_digits_batches_identical_with_threads():
    x = digits_input(9, seed=4)
    one = qbinfer.load(DIGITS, threads=1).run(x)
    np.testing.assert_array_equal(qbinfer.load(DIGITS).run(x), one)
    for threads in (2, 4):
        np.testing.assert_array_equal(_core.Model(str(DIGITS), threads).run(x), one)
        np.testing.assert_array_equal(_core.Model(str(DIGITS), threads, split="always").run(x), one)
