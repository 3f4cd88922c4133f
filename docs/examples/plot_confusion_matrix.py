"""
Confusion matrix of a fine-tuned model on ELPV
==============================================

A :class:`~sktransfer.TransferClassifier` fine-tuned on part of the ELPV
solar cells, scored on held-out cells with scikit-learn's
:class:`~sklearn.metrics.ConfusionMatrixDisplay`. The training here is
shortened (a subset, no flips, few epochs) so that the example runs in about
a minute; `benchmarks/results/transfer.md` has the full-protocol numbers.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from sklearn.model_selection import train_test_split

from sktransfer import TransferClassifier
from sktransfer.datasets import load_elpv

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
paths, probability, cell_type = load_elpv()
labels = np.where(probability > 0.5, "defective", "functional")
n = 300 if quick else 900
idx, _ = train_test_split(np.arange(len(paths)), train_size=n,
                          stratify=np.char.add(probability.astype(str), cell_type),
                          random_state=0)
X_train, X_test, y_train, y_test = train_test_split(
    paths[idx], labels[idx], test_size=0.3, stratify=labels[idx], random_state=0)

clf = TransferClassifier(augment=False, max_epochs=5, validation_fraction=None,
                         random_state=0)
clf.fit(X_train, y_train)
pred = clf.predict(X_test)
print(classification_report(y_test, pred))

ConfusionMatrixDisplay.from_predictions(y_test, pred, cmap="Blues")
plt.title(f"ELPV: {len(y_train)} training cells, {len(y_test)} test cells")
plt.tight_layout()
plt.show()
