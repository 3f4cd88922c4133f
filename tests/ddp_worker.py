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


def main(case, out, checkpoint_dir=None, die_at=None):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
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

    cls, params = CASES[case]
    X, y, w = data(case)
    est = cls(**params, accelerator=accelerator, checkpoint_dir=checkpoint_dir)
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
