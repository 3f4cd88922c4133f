"""
Does transfer learning help on ELPV? The report, and a model's mistakes
=======================================================================

:func:`sktransfer.compare` cross-validates the classical baselines, a small
CNN from scratch, frozen pretrained features and a fine-tuned
:class:`~sktransfer.TransferClassifier` on the same folds, and with
``report=`` writes ``report.html``: one self-contained page with the
learning curves, the scores, the confusion matrices, the fine-tuned model's
most confident mistakes with Grad-CAM heatmaps, and the images where it and
the best classical model disagree (the docs' report page shows one).

The pictures of a model's mistakes work for any fitted classifier:
:class:`~sktransfer.TopLossesDisplay` shows the images it is most
confidently wrong about, with where it looked.
"""

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from sktransfer import TopLossesDisplay, TransferClassifier, compare
from sktransfer.datasets import load_elpv

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
paths, probability, cell_type = load_elpv()
labels = np.where(probability > 0.5, "defective", "functional")

# %%
# The comparison, and its report. A stratified subset of ELPV keeps this
# example to minutes (``quick=True``: 120 images, 2 folds, a few epochs).
subset, _ = train_test_split(np.arange(len(paths)), train_size=600, stratify=labels,
                             random_state=0)
results = compare(paths[subset], labels[subset], cv=3, train_sizes=[0.3, 1.0],
                  quick=quick, report="elpv-report.html", random_state=0, verbose=False)
print(results.groupby(["model", "train_size"])["accuracy"].mean().round(3))
print(f"report: {Path('elpv-report.html').stat().st_size / 2**20:.1f} MiB")

# %%
# The most confident mistakes of a fine-tuned model on held-out cells, each
# with the Grad-CAM heatmap of the class it predicted.
train, test = train_test_split(np.arange(len(paths)), train_size=300 if quick else 900,
                               stratify=labels, random_state=1)
test = test[:200 if quick else 600]
clf = TransferClassifier(augment=False, max_epochs=3 if quick else 6,
                         validation_fraction=None, random_state=0)
clf.fit(paths[train], labels[train])
display = TopLossesDisplay.from_estimator(clf, paths[test], labels[test], n=8, n_cols=4)
display.figure_.suptitle("Most confident mistakes on held-out ELPV cells")
plt.tight_layout()
plt.show()
