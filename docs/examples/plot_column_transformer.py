"""
An image column next to tabular columns
=======================================

A ``ColumnTransformer`` embeds the image column of a DataFrame with
:class:`~sktransfer.PretrainedFeatureExtractor` and one-hot encodes a
categorical column, then one logistic regression uses both. On ELPV the
tabular column is the cell type (mono- or polycrystalline). With
``set_output(transform="pandas")`` the features keep their names.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sktransfer import PretrainedFeatureExtractor
from sktransfer.datasets import load_elpv

quick = bool(os.environ.get("SKTRANSFER_QUICK_GALLERY"))
paths, probability, cell_type = load_elpv()
df = pd.DataFrame({"image": paths, "cell_type": cell_type,
                   "defective": (probability > 0.5).astype(int)})
df, _ = train_test_split(df, train_size=200 if quick else 600, stratify=df["defective"],
                         random_state=0)
cache = tempfile.mkdtemp()


def model(columns):
    parts = [("image", PretrainedFeatureExtractor(memory=cache), ["image"])]
    if "cell_type" in columns:
        parts.append(("type", OneHotEncoder(sparse_output=False), ["cell_type"]))
    return make_pipeline(ColumnTransformer(parts), StandardScaler(),
                         LogisticRegression(C=0.01, max_iter=2000))


scores = {}
for name, columns in {"cell type only": ["cell_type"], "image only": ["image"],
                      "image + cell type": ["image", "cell_type"]}.items():
    if columns == ["cell_type"]:
        m = make_pipeline(OneHotEncoder(), LogisticRegression())
    else:
        m = model(columns)
    scores[name] = cross_val_score(m, df[columns], df["defective"], cv=3)
    print(f"{name}: {scores[name].mean():.3f}")

# %%
# The fitted transformer names its output columns.
ct = model(["image", "cell_type"])[0].set_output(transform="pandas")
print(ct.fit_transform(df[["image", "cell_type"]].iloc[:5]).columns[[0, 1, -2, -1]].tolist())

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.barh(list(scores), [s.mean() for s in scores.values()],
        xerr=[s.std() for s in scores.values()], color=["grey", "C0", "C1"])
ax.set_xlim(0.5, 1)
ax.set_xlabel("3-fold CV accuracy")
ax.set_title(f"ELPV, {len(df)} cells")
plt.tight_layout()
plt.show()
print(np.round([s.mean() for s in scores.values()], 3))
