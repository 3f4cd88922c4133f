"""One default fit on ELPV's paper split, in this process or in every process
of a ``torchrun`` launch (run by ``bench_distributed.py``).

``python _distributed_fit.py one OUT``: a plain fit. ``torchrun ...
_distributed_fit.py two OUT``: the same fit with ``Accelerator(cpu=True)``.
The main process writes ``OUT`` (JSON): times, epochs, and the test
probabilities (measured, not used to choose anything).
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from _elpv import paper_split  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402


def main(mode: str, out: str) -> None:
    accelerator = None
    if mode == "two":
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    X_train, y_train, X_test, y_test = paper_split()
    clf = TransferClassifier(random_state=0, accelerator=accelerator)
    t = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_s = time.perf_counter() - t
    if accelerator is not None and not accelerator.is_main_process:
        return
    t = time.perf_counter()
    proba = clf.predict_proba(X_test)[:, 1]
    Path(out).write_text(json.dumps({
        "mode": mode, "processes": 1 if accelerator is None else accelerator.num_processes,
        "threads_per_process": torch.get_num_threads(), "engine": clf.engine_,
        "fit_s": fit_s, "predict_s": time.perf_counter() - t,
        "epoch_s": [row["dur"] for row in clf.history_], "n_train": len(X_train),
        "y_test": y_test.tolist(), "proba": proba.tolist()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
