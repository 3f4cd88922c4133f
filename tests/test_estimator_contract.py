"""The estimator contract, on image inputs (see test_common.py for why)."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sktransfer import PretrainedFeatureExtractor

from .conftest import TINY


@pytest.fixture
def est():
    return PretrainedFeatureExtractor(**TINY)


def test_init_only_stores_params(est):
    assert not [k for k in vars(est) if k.endswith("_")]
    assert est.get_params()["backbone"] == TINY["backbone"]


def test_fit_returns_self_and_keeps_params(est, images):
    X, _ = images
    before = joblib.hash(est.get_params())
    public_before = set(vars(est))
    assert est.fit(X) is est
    assert joblib.hash(est.get_params()) == before
    added = set(vars(est)) - public_before
    assert added and all(k.endswith("_") and not k.startswith("_") for k in added)


def test_not_fitted(est, images):
    with pytest.raises(NotFittedError):
        est.transform(images[0])


def test_output_dtype_shape_and_names(est, images):
    X, _ = images
    Xt = est.fit_transform(X)
    assert Xt.dtype == np.float32 and Xt.shape == (len(X), est.n_features_out_)
    names = est.get_feature_names_out()
    assert len(names) == Xt.shape[1] and names[0] == "pretrainedfeatureextractor0"


def test_fit_idempotent_and_clone(est, images):
    X, _ = images
    a = est.fit(X).transform(X)
    b = est.fit(X).transform(X)
    c = clone(est).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not hasattr(clone(est), "model_")


def test_pickle_round_trip_identical(est, images):
    X, _ = images
    est.fit(X)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(est.transform(X), again.transform(X))
    unfitted = pickle.loads(pickle.dumps(clone(est)))
    assert unfitted.get_params() == clone(est).get_params()


def test_sample_order_and_subset_invariance(images):
    X, _ = images
    est = PretrainedFeatureExtractor(**TINY, precision="float32").fit(X)
    full = est.transform(X)
    perm = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(est.transform(X[perm]), full[perm], rtol=1e-5, atol=1e-5)
    one_by_one = np.vstack([est.transform(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_batch_size_does_not_change_features(images, batch_size):
    X, _ = images
    ref = PretrainedFeatureExtractor(**TINY, precision="float32").fit(X).transform(X)
    got = PretrainedFeatureExtractor(
        **TINY, precision="float32", batch_size=batch_size
    ).fit(X).transform(X)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_readonly_and_fortran_inputs(est, images):
    X, _ = images
    ref = est.fit(X).transform(X)
    ro = X.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(est.transform(ro), ref)
    np.testing.assert_array_equal(est.transform(np.asfortranarray(X)), ref)


def test_flattened_square_images_and_n_features_in(est):
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data[:10] / 16.0
    Xt = est.fit_transform(X)
    assert est.n_features_in_ == 64
    np.testing.assert_array_equal(Xt, est.transform(X.reshape(-1, 8, 8)))
    with pytest.raises(ValueError, match="X has 49 features, but PretrainedFeatureExtractor"):
        est.transform(np.zeros((2, 49)))
    est.fit(X.reshape(-1, 8, 8))
    assert not hasattr(est, "n_features_in_")


def test_invalid_params_are_reported_in_fit(images):
    X, _ = images
    with pytest.raises(ValueError, match="batch_size"):
        PretrainedFeatureExtractor(**TINY, batch_size=0).fit(X)
    with pytest.raises(ValueError, match="precision"):
        PretrainedFeatureExtractor(**TINY, precision="half").fit(X)
    with pytest.raises(ValueError, match="CUDA is not available"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        PretrainedFeatureExtractor(**TINY, device="cuda").fit(X)


def test_bf16_starts_after_the_first_stage(images):
    import torch

    X, _ = images
    est = PretrainedFeatureExtractor(**TINY, precision="bfloat16").fit(X)
    dtypes = {}
    for name in ("conv_stem", est.stages_[0], est.stages_[1], "conv_head"):
        est.model_.backbone.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: dtypes.__setitem__(name, o.dtype))
    est.transform(X[:2])
    assert dtypes["conv_stem"] == dtypes[est.stages_[0]] == torch.float32
    assert dtypes[est.stages_[1]] == dtypes["conv_head"] == torch.bfloat16
    ref = PretrainedFeatureExtractor(**TINY, precision="float32").fit(X).transform(X)
    got = est.transform(X)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.98
