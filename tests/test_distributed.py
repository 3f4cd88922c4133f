"""One fit over two processes with an accelerator (gloo on the CPU).

Each case runs ``tests/ddp_worker.py`` under ``torchrun --nproc_per_node 2``
once; the tests compare what the two processes wrote with each other and
with a fit in this process.
"""

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")

from sklearn.base import clone  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer._distributed import PickledAccelerator, Processes, _check_settings  # noqa: E402
from sktransfer._training.data import EpochBatches, batch_bounds  # noqa: E402

from .ddp_worker import CASES, data  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
#: A launch that has not ended by then hangs (a fit here takes seconds).
LAUNCH_TIMEOUT = 240


def launch(case, out, checkpoint_dir="-", *extra):
    """``torchrun`` two processes of ``case``; ``(return code, output)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE",
                                                                       "LOCAL_RANK", "MASTER_"))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", WORKER, case, str(out), str(checkpoint_dir), *map(str, extra)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=LAUNCH_TIMEOUT)
    return done.returncode, done.stdout + done.stderr


def results(out):
    ranks = []
    for r in range(2):
        with open(os.path.join(out, f"rank{r}.pkl"), "rb") as f:
            ranks.append(pickle.load(f))
    return ranks


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each case launched once, on first use."""
    done = {}

    def run(case):
        if case not in done:
            out = tmp_path_factory.mktemp(case)
            code, output = launch(case, out)
            assert code == 0, output[-4000:]
            done[case] = (out, results(out))
        return done[case]

    return run


def one_process(case):
    cls, params = CASES[case]
    X, y, w = data(case)
    return cls(**params).fit(X, y, sample_weight=w), X


@pytest.mark.parametrize("case", ["fit", "early", "gradual"])
def test_processes_end_with_the_same_model(runs, case):
    _, (r0, r1) = runs(case)
    assert r0["world"] == 2
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:  # BatchNorm statistics included
        np.testing.assert_array_equal(r0["weights"][k], r1["weights"][k], err_msg=k)
    def scores(history):  # all but the timings
        return [{k: v for k, v in row.items() if k != "dur"} for row in history]

    assert scores(r0["history"]) == scores(r1["history"])
    np.testing.assert_array_equal(r0["prediction"], r1["prediction"])


def test_frozen_outputs_beyond_the_budget_are_shared_in_one_file(runs):
    """Beyond working_memory the processes share one mapped file instead of
    each holding every image's outputs: the same model as in memory."""
    _, (disk0, disk1) = runs("disk")
    _, (memory0, _) = runs("fit")
    for k, v in memory0["weights"].items():
        np.testing.assert_array_equal(disk0["weights"][k], v, err_msg=k)
        np.testing.assert_array_equal(disk1["weights"][k], v, err_msg=k)


def test_head_only_fit_is_the_one_process_fit(runs):
    """Without BatchNorm statistics per share, two processes learn what one
    does, with uneven shares (batch_size=7) and the same history."""
    _, (r0, _) = runs("head")
    est, X = one_process("head")
    assert len(r0["history"]) == est.n_epochs_
    for mine, theirs in zip(r0["history"], est.history_):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    np.testing.assert_allclose(r0["prediction"], est.predict_proba(X), atol=1e-5)


def test_fit_with_batchnorm_is_close_to_the_one_process_fit(runs):
    """The trained stage's BatchNorm normalises each process's share of a
    batch with the share's statistics (as DistributedDataParallel does):
    the stated tolerance on this tiny backbone is 0.15 in probability
    (0.075 measured)."""
    _, (r0, _) = runs("fit")
    est, X = one_process("fit")
    assert len(r0["history"]) == est.n_epochs_
    assert np.abs(r0["prediction"] - est.predict_proba(X)).max() < 0.15


def test_early_stopping_stops_every_process_at_the_same_epoch(runs):
    _, (r0, r1) = runs("early")
    max_epochs = CASES["early"][1]["max_epochs"]
    assert len(r0["history"]) == len(r1["history"]) < max_epochs
    assert [h["valid_acc"] for h in r0["history"]] == [h["valid_acc"] for h in r1["history"]]


def test_pickled_model_loads_and_predicts_in_a_plain_process(runs):
    out, (r0, _) = runs("fit")
    with open(os.path.join(out, "model.pkl"), "rb") as f:
        model = pickle.load(f)
    X, y, _ = data("fit")
    assert isinstance(model.accelerator, PickledAccelerator)
    np.testing.assert_allclose(model.predict_proba(X), r0["prediction"], atol=1e-5)
    with pytest.raises(RuntimeError, match="pickled with an accelerator.*n_jobs=1"):
        model.fit(X, y)
    model.set_params(accelerator=None, max_epochs=1).fit(X, y)


def test_search_with_n_jobs_is_refused(runs):
    _, (r0, r1) = runs("search")
    for r in (r0, r1):
        assert r["error"].startswith("RuntimeError")
        assert "n_jobs=1" in r["error"]


def test_killed_process_stops_the_fit_and_a_relaunch_resumes(runs, tmp_path):
    """A process killed as epoch 3 begins: the launch ends with an error
    naming it (well within the launch timeout), and launching again with the
    same checkpoint directory resumes after epoch 2 and ends with the model
    of an uninterrupted fit."""
    checkpoint = tmp_path / "checkpoint"
    code, output = launch("fit", tmp_path, checkpoint, 3)
    assert code != 0
    # The launcher's summary names the killed process ...
    assert re.search(r"rank\s+: 1 \(local_rank: 1\)\s+exitcode\s+: -9", output), output[-3000:]
    # ... and the other one either stopped with an error naming itself, or was
    # stopped by the launcher first.
    assert ("the fit stopped in the process of rank 0 (of 2)" in output
            or re.search(r"rank\s+: 0 \(local_rank: 0\)\s+exitcode\s+: -15", output)), \
        output[-3000:]
    code, output = launch("fit", tmp_path, checkpoint)
    assert code == 0, output[-4000:]
    resumed = results(tmp_path)
    _, (uninterrupted, _) = runs("fit")
    assert resumed[0]["resumed_from_epoch"] == 2
    for k, v in uninterrupted["weights"].items():
        np.testing.assert_allclose(resumed[1]["weights"][k], v, atol=1e-6, err_msg=k)


# -- the pieces, in one process ---------------------------------------------------------


def _processes(rank, world):
    procs = Processes(None)
    procs.rank, procs.world = rank, world
    return procs


class _Recorder:
    """A dataset that records the batches an epoch asks of it."""

    n_views = 4

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def batches(self, order, views, sizes, scales=None):
        return order, views, sizes, scales


@pytest.mark.parametrize("n, batch_size", [(29, 8), (28, 7), (9, 8)])
def test_shares_of_a_shuffled_epoch_make_up_the_one_process_epoch(n, batch_size):
    def epoch(processes):
        gen = torch.Generator().manual_seed(3)
        it = EpochBatches(_Recorder(n), batch_size, shuffle=True, generator=gen,
                          processes=processes)
        return len(it), it.__iter__()

    length, (order, views, sizes, _) = epoch(_processes(0, 1))
    shares = [epoch(_processes(r, 2)) for r in range(2)]
    bounds = batch_bounds(n, batch_size, world=2)
    assert all(s[0] == len(bounds) for s in shares)
    start = [0, 0]
    for b, (s, e) in enumerate(bounds):
        parts = []
        for r, (_, (o, v, sz, sc)) in enumerate(shares):
            part = slice(start[r], start[r] + sz[b])
            start[r] += sz[b]
            parts.append((o[part], v[part]))
            assert sz[b] >= 2
            assert sc[b] == pytest.approx(2 * sz[b] / (e - s))
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), order[s:e])
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), views[s:e])


def test_last_batch_too_small_to_share_joins_the_one_before():
    assert batch_bounds(17, 8) == [(0, 8), (8, 17)]
    assert batch_bounds(16, 8) == [(0, 8), (8, 16)]
    assert batch_bounds(1, 8) == [(0, 1)]
    assert batch_bounds(19, 8, world=2) == [(0, 8), (8, 19)]
    assert batch_bounds(20, 8, world=2) == [(0, 8), (8, 16), (16, 20)]


class _StubAccelerator:
    process_index, num_processes = 0, 2


def test_one_distributed_fit_at_a_time_in_a_process():
    refused = pytest.raises(RuntimeError, match="one model at a time.*n_jobs=1")
    with Processes(_StubAccelerator()), refused, Processes(_StubAccelerator()):
        pass
    with Processes(_StubAccelerator()):  # released
        pass


def test_accelerator_outside_its_processes_is_refused(images):
    """Two processes described, but no process group here (a copy in a worker)."""
    X, y = images
    clf = TransferClassifier(accelerator=_Accelerator2())
    with pytest.raises(RuntimeError, match="not one of them.*n_jobs=1"):
        clf.fit(X, y)


class _Accelerator2(_StubAccelerator):
    def prepare(self, *args):
        return args

    def wait_for_everyone(self):
        pass


def test_device_must_be_auto_with_an_accelerator():
    from accelerate import Accelerator

    clf = TransferClassifier(device="cuda:3", accelerator=Accelerator(cpu=True))
    with pytest.raises(ValueError, match="leave device='auto'"):
        clf._resolve_device()


def test_clone_shares_the_accelerator():
    """One accelerator per launched process: a search's clones use it, not copies."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    clf = TransferClassifier(accelerator=accelerator, lr=0.01)
    copy = clone(clf)
    assert copy.accelerator is accelerator and copy.lr == 0.01


@pytest.mark.parametrize("settings, match", [
    (dict(gradient_accumulation_steps=2), "gradient_accumulation_steps=2"),
    (dict(distributed_type=type("T", (), {"name": "FSDP"})()), "FSDP"),
])
def test_accelerator_settings_the_fit_cannot_honour_are_refused(settings, match):
    accelerator = type("Stub", (), settings)()
    with pytest.raises(ValueError, match=match):
        _check_settings(accelerator, "TransferClassifier")


def test_each_process_needs_its_share_of_batches_and_validation():
    from sktransfer._training.data import check_shares

    check_shares(4, 8, 8, 4)  # just enough
    with pytest.raises(ValueError, match="batch_size=6"):
        check_shares(4, 6, 100, 0)
    with pytest.raises(ValueError, match="3 images.*validation_fraction"):
        check_shares(4, 32, 100, 3)


def test_the_main_process_raises_its_own_error(tmp_path):
    """What the main process decides fails there with the original error; the
    other process gets a copy that survives pickling."""
    code, output = launch("decide", tmp_path)
    assert code == 0, output[-4000:]
    r0, r1 = results(tmp_path)
    assert r0["raised"] == ("Unpicklable", "1 2")
    assert r1["raised"] == ("RuntimeError", "Unpicklable: 1 2")


@pytest.mark.parametrize("case, error", [("mismatch", "ValueError"),
                                         ("unreadable", "ImageError")])
def test_a_failed_distributed_fit_leaves_each_estimator_as_it_was(tmp_path, case, error):
    """Processes given different images (the same targets) refuse to train;
    a process that cannot read an image of its share stops the fit. Each
    process's estimator, fitted before, pickles and predicts as it did."""
    code, output = launch(case, tmp_path)
    assert code != 0
    ranks = [1] if case == "unreadable" else [0, 1]  # the launcher stops the other one
    for rank in ranks:
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            r = pickle.load(f)
        assert r["raised"] is not None and r["raised"][0] == error, r
        assert r["unchanged"] and r["same_prediction"], r
    if case == "mismatch":
        assert "differ from rank 0 in the images" in r["raised"][1]
