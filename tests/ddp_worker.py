"""One process of a fit over several processes, launched by the tests with
``torchrun --nproc_per_node 2 tests/ddp_worker.py CASE OUT``.

Each process writes what the tests compare into ``OUT/rank{r}.pkl``: the
fitted weights, the history, predictions; the main process also pickles the
fitted estimator into ``OUT/model.pkl``.
"""

import os
import pickle
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sktransfer import TransferClassifier, TransferRegressor  # noqa: E402
from tests.conftest import TINY, make_images  # noqa: E402

#: Settings of each case: estimator class and parameters, and what it fits on.
CASES = {
    # Only the new head trains (no BatchNorm statistics per share): one
    # process's fit up to float rounding.
    "head": (TransferClassifier, dict(TINY, max_epochs=4, batch_size=7, dropout=0.0,
                                      trainable_stages=0)),
    # The stored frozen outputs, flips, dropout off: compared with one process.
    "fit": (TransferClassifier, dict(TINY, max_epochs=4, batch_size=8, dropout=0.0)),
    # Early stopping on the validation accuracy of all processes.
    "early": (TransferClassifier, dict(TINY, max_epochs=30, batch_size=8, lr=0.05,
                                       validation_fraction=0.3, patience=2)),
    # Batches decoded and augmented at random, stages unfrozen during the fit,
    # sample weights and two targets.
    "gradual": (TransferRegressor, dict(TINY, max_epochs=3, batch_size=8, augment=True,
                                        trainable_stages="gradual")),
}


def data(case):
    X, y = make_images(n=28, size=32)
    if case == "gradual":
        y = np.column_stack([y * 2.0, X.mean(axis=(1, 2, 3)) / 50])
        return X, y, np.linspace(0.5, 2.0, len(y))
    return X, y, None


class Unpicklable(Exception):
    """An error that pickles but does not unpickle (two arguments, one message)."""

    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


def _write(out, rank, result):
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


def decide_error(accelerator, out):
    """What the main process decides raises there: every process raises."""
    from sktransfer._distributed import Processes

    def decide():
        raise Unpicklable(1, 2)

    try:
        Processes(accelerator).main_decides(decide)
        raised = None
    except Exception as exc:
        raised = (type(exc).__name__, str(exc))
    _write(out, accelerator.process_index, {"raised": raised})
    accelerator.wait_for_everyone()


def failed_fit(accelerator, out, case):
    """A model fitted in each process alone, then a distributed fit of it that
    fails: the processes were given different images ("mismatch"), or one
    process cannot read an image of its share ("unreadable": the other
    process is then stopped by the launcher)."""
    from PIL import Image

    rank = accelerator.process_index
    X, y = make_images(n=16, size=32)
    paths = []
    for i, image in enumerate(X):
        path = os.path.join(out, f"{rank}-{i:02d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    est = TransferClassifier(**dict(TINY, max_epochs=2, batch_size=8)).fit(paths, y)
    expected = est.predict_proba(paths)
    est.set_params(accelerator=accelerator)
    before = pickle.dumps(est)
    if case == "mismatch" and rank == 1:  # other pixels, the same targets
        Image.fromarray(255 - X[0]).save(paths[0])
    if case == "unreadable":  # the same data everywhere; the last image is in rank 1's share
        data = open(paths[-1], "rb").read()
        with open(paths[-1], "wb") as f:
            f.write(data[: len(data) // 2])
    try:
        est.fit(paths, y)
        raised = None
    except Exception as exc:
        raised = (type(exc).__name__, str(exc))
    if case == "unreadable":  # compare with what the process could read
        Image.fromarray(X[-1]).save(paths[-1])
    if case == "mismatch" and rank == 1:
        Image.fromarray(X[0]).save(paths[0])
    _write(out, rank, {"raised": raised, "unchanged": pickle.dumps(est) == before,
                       "same_prediction": bool((est.predict_proba(paths) == expected).all())})
    if case == "mismatch":  # both processes wrote before either ends
        accelerator.wait_for_everyone()
    if raised is not None:
        sys.exit(1)


def main(case, out, checkpoint_dir=None, die_at=None):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    if case == "decide":
        return decide_error(accelerator, out)
    if case in ("mismatch", "unreadable"):
        return failed_fit(accelerator, out, case)
    if case == "search":  # a search copying the estimator into worker processes
        from sklearn.model_selection import GridSearchCV

        cls, params = CASES["fit"]
        X, y, _ = data("fit")
        search = GridSearchCV(cls(**params, accelerator=accelerator), {"lr": [1e-3, 1e-2]},
                              cv=2, n_jobs=2, error_score="raise")
        try:
            search.fit(X, y)
            message = None
        except Exception as exc:  # what the user would see
            message = f"{type(exc).__name__}: {exc}"
        with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump({"error": message}, f)
        return
    if die_at is not None and rank == 1:
        from sktransfer._training import callbacks

        original = callbacks.SeedEpoch.on_epoch_begin

        def on_epoch_begin(self, net, **kwargs):
            if len(net.history) == die_at:  # the rank dies as this epoch begins
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, net, **kwargs)

        callbacks.SeedEpoch.on_epoch_begin = on_epoch_begin

    import sklearn

    # "disk": the "fit" case with its frozen outputs beyond working_memory,
    # in one file the two processes share
    cls, params = CASES["fit" if case == "disk" else case]
    X, y, w = data(case)
    est = cls(**params, accelerator=accelerator, checkpoint_dir=checkpoint_dir)
    with sklearn.config_context(working_memory=0.01 if case == "disk" else 1024):
        est.fit(X, y, sample_weight=w)
    result = {
        "weights": {k: v.detach().cpu().numpy() for k, v in est.model_.state_dict().items()},
        "history": est.history_,
        "resumed_from_epoch": est.resumed_from_epoch_,
        "prediction": (est.predict_proba(X) if cls is TransferClassifier
                       else est.predict(X)),
        "world": accelerator.num_processes,
    }
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)
    if accelerator.is_main_process:
        with open(os.path.join(out, "model.pkl"), "wb") as f:
            pickle.dump(est, f)


if __name__ == "__main__":
    case, out = sys.argv[1], sys.argv[2]
    checkpoint_dir = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    die_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
    main(case, out, checkpoint_dir, die_at)
    import torch.distributed

    # Leave the process group before exiting: a process that exits while
    # the other still holds the group can abort in gloo's destructor.
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
