"""
Where does the model look? Grad-CAM on ELPV
===========================================

:meth:`TransferClassifier.explain <sktransfer.TransferClassifier.explain>`
returns one Grad-CAM heatmap per image, aligned with the input, and
:func:`~sktransfer.plot_explanations` overlays them. On defective solar
cells the evidence for "defective" should sit on cracks and dark (inactive)
areas, not on the busbars or the cell border.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from sktransfer import TransferClassifier, plot_explanations
from sktransfer.datasets import load_elpv

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
paths, probability, cell_type = load_elpv()
labels = np.where(probability > 0.5, "defective", "functional")
train, test = train_test_split(np.arange(len(paths)), train_size=300 if quick else 900,
                               stratify=labels, random_state=1)
clf = TransferClassifier(augment=False, max_epochs=5, validation_fraction=None,
                         random_state=0).fit(paths[train], labels[train])

# %%
# Eight held-out cells that experts rated certainly defective, explained for
# the class "defective".
certain = test[probability[test] == 1.0][:8]
maps = clf.explain(paths[certain], target="defective")
proba = clf.predict_proba(paths[certain])[:, list(clf.classes_).index("defective")]
fig = plot_explanations(paths[certain], maps, n_cols=4,
                        titles=[f"{t}, p(defective)={p:.2f}"
                                for t, p in zip(cell_type[certain], proba)])
fig.suptitle("Grad-CAM for 'defective' on held-out defective cells")
plt.tight_layout()
plt.show()
