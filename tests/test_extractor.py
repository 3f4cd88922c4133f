"""The extractor inside scikit-learn workflows, and its embedding cache."""

import os
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import PretrainedFeatureExtractor, _process_cache
from sktransfer._device import cpu_has_native_bf16
from sktransfer._testing import recording

from .conftest import TINY


def test_pipeline_grid_search_over_nested_params(png_files):
    paths, y = png_files
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY), StandardScaler(),
                         LogisticRegression())
    grid = GridSearchCV(
        pipe,
        {
            "pretrainedfeatureextractor__layer": ["pooled", "stage2"],
            "logisticregression__C": [0.1, 1.0],
        },
        cv=3,
    )
    grid.fit(paths, y)
    assert set(grid.best_params_) == {"pretrainedfeatureextractor__layer", "logisticregression__C"}
    assert grid.predict(paths).shape == (len(paths),)
    assert grid.score(paths, y) > 0.9  # the two classes are visually distinct
    scores = cross_val_score(pipe, np.array(paths), y, cv=3)
    assert scores.shape == (3,)


def test_column_transformer_with_image_and_tabular_columns(png_files):
    paths, y = png_files
    df = pd.DataFrame({"image": paths, "age": np.arange(len(y), dtype=float),
                       "temp": np.linspace(0, 1, len(y))})
    ct = ColumnTransformer([
        ("img", PretrainedFeatureExtractor(**TINY), ["image"]),
        ("num", StandardScaler(), ["age", "temp"]),
    ])
    Xt = ct.fit_transform(df)
    n_img = ct.named_transformers_["img"].n_features_out_
    assert Xt.shape == (len(y), n_img + 2)
    names = ct.get_feature_names_out()
    assert names[0] == "img__pretrainedfeatureextractor0" and names[-1] == "num__temp"
    ext = ct.named_transformers_["img"]
    assert list(ext.feature_names_in_) == ["image"] and ext.n_features_in_ == 1
    model = make_pipeline(ct, StandardScaler(), LogisticRegression(max_iter=500)).fit(df, y)
    assert model.score(df, y) > 0.9


def test_set_output_pandas(images):
    X, _ = images
    est = PretrainedFeatureExtractor(**TINY).set_output(transform="pandas")
    out = est.fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(est.get_feature_names_out())
    assert out.dtypes.iloc[0] == np.float32


def test_cache_returns_identical_features_and_skips_work(tmp_path, png_files):
    paths, _ = png_files
    plain = PretrainedFeatureExtractor(**TINY).fit(paths)
    ref = plain.transform(paths)
    est = PretrainedFeatureExtractor(**TINY, memory=str(tmp_path / "c")).fit(paths)
    np.testing.assert_array_equal(est.transform(paths[:5]), ref[:5])
    _process_cache.clear()  # force reads from disk
    with recording() as counts:
        np.testing.assert_array_equal(est.transform(paths), ref)
    assert counts["embeddings", "written"] == len(paths) - 5  # only the new images embedded
    with recording() as counts:
        np.testing.assert_array_equal(est.transform(paths[::-1]), ref[::-1])
    assert counts["embeddings", "written"] == 0
    assert counts["embeddings", "read"] == len(paths)
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(".tmp")]
    assert not leftovers


def test_cache_is_keyed_by_content_not_path(tmp_path, png_files):
    paths, _ = png_files
    copy = tmp_path / "renamed.png"
    copy.write_bytes(open(paths[3], "rb").read())
    est = PretrainedFeatureExtractor(**TINY, memory=joblib.Memory(tmp_path / "c", verbose=0))
    est.fit(paths)
    est.transform(paths)
    with recording() as counts:
        est.transform([str(copy)])
    assert counts["embeddings", "written"] == 0 and counts["embeddings", "read"] == 1


def test_cache_never_mixes_settings(tmp_path, images):
    X, _ = images
    mem = str(tmp_path / "c")
    for params in [{}, {"layer": "stage2"}, {"image_size": 48}, {"precision": "float32"},
                   {"random_state": 1}]:
        cached = PretrainedFeatureExtractor(**{**TINY, **params}, memory=mem).fit(X)
        fresh = PretrainedFeatureExtractor(**{**TINY, **params}).fit(X)
        cached.transform(X)  # fill
        np.testing.assert_array_equal(cached.transform(X), fresh.transform(X), err_msg=str(params))
    roots = os.listdir(os.path.join(mem, "sktransfer-embeddings"))
    # precision="auto" is float32 on a CPU without native bf16: the same
    # setting as precision="float32", rightly one entry
    assert len(roots) == (5 if cpu_has_native_bf16() else 4)


def test_corrupt_cache_entry_is_recomputed(tmp_path, images):
    X, _ = images
    mem = tmp_path / "c"
    est = PretrainedFeatureExtractor(**TINY, memory=str(mem)).fit(X)
    ref = est.transform(X)
    for root, _, files in os.walk(mem):
        for f in files:
            if f.endswith(".npy"):
                with open(os.path.join(root, f), "r+b") as fh:
                    fh.truncate(20)
    _process_cache.clear()
    np.testing.assert_array_equal(est.transform(X), ref)


def test_memory_is_pickleable_and_cloneable(tmp_path, images):
    X, _ = images
    est = PretrainedFeatureExtractor(**TINY, memory=str(tmp_path)).fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(X), est.transform(X))


def test_default_backbone_pipeline_cross_validates_on_elpv(tmp_path):
    """Real weights, real data, offline: frozen features + LR on 300 ELPV cells."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from sktransfer.datasets import load_elpv

    paths, probability, cell_type = load_elpv()
    y = (probability > 0.5).astype(int)
    idx, _ = train_test_split(np.arange(len(y)), train_size=300, stratify=y, random_state=0)
    pipe = make_pipeline(PretrainedFeatureExtractor(memory=str(tmp_path)), StandardScaler(),
                         LogisticRegression(C=0.01, max_iter=2000))
    scores = cross_val_score(pipe, paths[idx], y[idx],
                             cv=StratifiedKFold(3, shuffle=True, random_state=0))
    majority = max(y[idx].mean(), 1 - y[idx].mean())
    assert scores.mean() > majority + 0.03, (scores, majority)


def _timm_stage_pooled(est, X, index):
    """timm's own stage ``index`` output (``forward_intermediates``, which
    returns every stage channels first), averaged over space, for the
    extractor's preprocessed ``X``."""
    from sktransfer._images import check_images
    from sktransfer._inputs import Preprocess, iter_batches

    ((_, x),) = iter_batches(check_images(X), range(len(X)), len(X),
                             Preprocess(**est.preprocess_))
    with torch.no_grad():
        (stage,) = est.model_.backbone.forward_intermediates(
            x, indices=[index], output_fmt="NCHW", intermediates_only=True)
    return stage.mean(dim=(2, 3)).numpy()


@pytest.mark.parametrize("backbone, n_channels, engine", [
    ("timm/test_mambaout", 32, "torch"),  # channels last: its stages return (N, H, W, C)
    ("timm/test_efficientnet", 24, "torch"),  # channels first, as before
    ("timm/test_mambaout", 32, "onnxruntime"),  # the exported trunk pools the same way
    ("timm/test_mambaout", 32, "openvino"),
])
def test_stage_features_are_timms_stage_pooled(images, backbone, n_channels, engine):
    """layer="stage2" gives one feature per channel of timm's second stage:
    its mean over space, whatever layout the stage returns."""
    X, _ = images
    est = PretrainedFeatureExtractor(backbone=backbone, weights=None, image_size=64,
                                     layer="stage2", engine=engine, precision="float32",
                                     random_state=0).fit(X)
    got = est.transform(X)
    assert got.shape == (len(X), n_channels) and est.n_features_out_ == n_channels
    np.testing.assert_allclose(got, _timm_stage_pooled(est, X, 1), rtol=1e-5, atol=1e-6)
