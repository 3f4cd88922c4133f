"""
Frozen features or fine-tuning: a learning curve
================================================

scikit-learn's :class:`~sklearn.model_selection.LearningCurveDisplay` on
ELPV solar-cell images (defect probability > 0.5): frozen EfficientNet-Lite0
features + logistic regression against a fine-tuned
:class:`~sktransfer.TransferClassifier`, on the same folds. A short
fine-tuning (few epochs, smaller images) keeps the example to a few minutes
on a CPU; ``benchmarks/results/seed_claims.md`` has the full-size curves.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LearningCurveDisplay, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import PretrainedFeatureExtractor, TransferClassifier
from sktransfer.datasets import load_elpv

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
paths, probability, cell_type = load_elpv()
y_all = (probability > 0.5).astype(int)
idx, _ = train_test_split(np.arange(len(paths)), train_size=180 if quick else 450,
                          stratify=y_all, random_state=0)
X, y = paths[idx], y_all[idx]

models = {
    "frozen features + LR": make_pipeline(
        PretrainedFeatureExtractor(image_size=160, memory=tempfile.mkdtemp()),
        StandardScaler(), LogisticRegression(C=0.01, max_iter=2000)),
    "fine-tuned (last stage)": TransferClassifier(
        image_size=160, augment=False, max_epochs=4, validation_fraction=None,
        random_state=0),
}
cv = StratifiedKFold(3, shuffle=True, random_state=0)
fig, ax = plt.subplots(figsize=(7, 4.5))
lines = []
for _name, model in models.items():
    display = LearningCurveDisplay.from_estimator(
        model, X, y, cv=cv, train_sizes=[0.2, 0.5, 1.0], ax=ax, score_type="test",
        std_display_style="fill_between", line_kw={"marker": "o"})
    lines.append(display.lines_[0])
ax.legend(lines, list(models))
ax.set_ylabel("test accuracy")
ax.set_title(f"ELPV, {len(y)} images, 3-fold CV")
plt.tight_layout()
plt.show()
