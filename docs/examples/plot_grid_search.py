"""
Grid search over the backbone and the head
==========================================

A :class:`~sktransfer.PretrainedFeatureExtractor` is one step of a
``Pipeline``, so ``GridSearchCV`` searches its parameters like any other:
here the backbone's weights (ImageNet or a random initialisation, the same
architecture), the layer the features come from, and the logistic
regression's ``C``. With ``memory=`` each image is embedded once per
backbone setting, not once per candidate and fold.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import PretrainedFeatureExtractor

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
digits = load_digits()
n = 150 if quick else 400
X, y = digits.images[:n] / 16, digits.target[:n]

pipe = make_pipeline(
    PretrainedFeatureExtractor(image_size=64, memory=tempfile.mkdtemp(), random_state=0),
    StandardScaler(),
    LogisticRegression(max_iter=2000),
)
grid = GridSearchCV(
    pipe,
    {
        "pretrainedfeatureextractor__weights": ["DEFAULT", None],
        "pretrainedfeatureextractor__layer": ["pooled", "stage6"],
        "logisticregression__C": [0.01, 0.1, 1.0],
    },
    cv=3,
)
grid.fit(X, y)
print("best:", grid.best_params_, round(grid.best_score_, 3))

# %%
# Mean cross-validated accuracy of each candidate: ImageNet weights against
# the same network with random weights.
res = pd.DataFrame(grid.cv_results_)
res["weights"] = res["param_pretrainedfeatureextractor__weights"].map(
    lambda w: "ImageNet" if w == "DEFAULT" else "random init")
res["layer"] = res["param_pretrainedfeatureextractor__layer"]
table = res.pivot_table(index=["weights", "layer"], columns="param_logisticregression__C",
                        values="mean_test_score")
ax = table.plot.bar(figsize=(7, 4), rot=0)
ax.set_ylabel("mean CV accuracy")
ax.set_xlabel("backbone weights, layer")
ax.legend(title="C")
ax.set_title(f"digits, {n} images, 3-fold CV")
plt.tight_layout()
plt.show()
