"""One answer per input: the same fitted model gives the same output on every path.

Identical, bit for bit: with and without ``memory=``, before and after
pickling, on the first and the second call. Across engines, within the
tolerance the user guide states ("One answer per input"): float32 engines
within ``ENGINE_ATOL`` of torch at float32.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, _engines, _process_cache

from .conftest import TINY, assert_bf16_close, make_images

#: The user guide's tolerance between inference engines at float32.
ENGINE_ATOL = 1e-4
ENGINES = ["torch", "onnxruntime", "openvino"]
FAST = dict(TINY, max_epochs=1, batch_size=8, dropout=0.0)


pytestmark = pytest.mark.usefixtures("fresh_process_caches")


@pytest.fixture(scope="module")
def data():
    return make_images(16)


#: A channels-first and a channels-last backbone (its stages return (N, H, W, C)),
#: with the trainable_stages that cut them right after stage 1 and before the last.
BACKBONES = {"timm/test_efficientnet": dict(image_size=32, cuts=(4, 1)),
             "timm/test_mambaout": dict(image_size=64, cuts=(3, 1))}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("cut", [0, 1])  # right after stage 1 / before the last stage
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_fine_tuned_model_gives_one_answer_on_every_path(data, tmp_path, backbone, engine, tta,
                                                         cut, precision):
    if engine == "onnxruntime" and precision == "bfloat16":
        pytest.skip("ONNX Runtime computes float32 only (precision_ becomes 'float32')")
    X, y = data
    spec = BACKBONES[backbone]
    params = dict(FAST, engine=engine, backbone=backbone, image_size=spec["image_size"],
                  precision=precision, tta=tta, trainable_stages=spec["cuts"][cut])
    est = TransferClassifier(**params).fit(X, y)
    assert est.trunk_.cut == est.model_.stage_ends()[-1 - spec["cuts"][cut]]
    assert est.engine_ == engine
    before = pickle.dumps(est)
    ref = est.predict_proba(X)
    np.testing.assert_array_equal(est.predict_proba(X), ref)  # the second call
    assert pickle.dumps(est) == before  # predict wrote nothing
    np.testing.assert_array_equal(pickle.loads(before).predict_proba(X), ref)
    # The same fit with memory=, as a user runs it: outputs computed and stored
    # in training, then, in a new process, read from disk ...
    stored = TransferClassifier(**params, memory=tmp_path).fit(X, y)
    np.testing.assert_array_equal(stored.predict_proba(X), ref)
    _process_cache.clear()
    np.testing.assert_array_equal(stored.predict_proba(X), ref)
    # ... and for images it has not seen: computed and stored by predict, then read
    new, _ = make_images(6, seed=1)
    expected = est.predict_proba(new)
    np.testing.assert_array_equal(stored.predict_proba(new), expected)
    _process_cache.clear()
    np.testing.assert_array_equal(stored.predict_proba(new), expected)
    assert list((tmp_path / "sktransfer-frozen").iterdir())


def test_a_fit_with_memory_learns_and_predicts_what_a_fit_without_it_does(data, tmp_path):
    """The top runs at one precision whichever way its input arrived (it ran
    under bf16 autocast without ``memory=`` and in float32 with it)."""
    X, y = data
    params = dict(FAST, max_epochs=2, precision="bfloat16", tta=False)
    plain = TransferClassifier(**params).fit(X, y)
    stored = TransferClassifier(**params, memory=tmp_path).fit(X, y)
    np.testing.assert_array_equal(stored.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layer", ["pooled", "stage1", "stage3"])
def test_extractor_gives_one_answer_on_every_path(data, tmp_path, engine, layer, precision):
    X, _ = data
    params = dict(TINY, engine=engine, layer=layer, precision=precision)
    est = PretrainedFeatureExtractor(**params).fit(X)
    before = pickle.dumps(est)
    ref = est.transform(X)
    np.testing.assert_array_equal(est.transform(X), ref)
    assert pickle.dumps(est) == before
    np.testing.assert_array_equal(pickle.loads(before).transform(X), ref)
    stored = PretrainedFeatureExtractor(**params, memory=tmp_path).fit(X)
    np.testing.assert_array_equal(stored.transform(X), ref)
    _process_cache.clear()
    np.testing.assert_array_equal(stored.transform(X), ref)
    exact = PretrainedFeatureExtractor(**dict(TINY, engine="torch"), layer=layer,
                                       precision="float32").fit(X).transform(X)
    if est.precision_ == "float32":  # ONNX Runtime computes float32 whatever was asked
        np.testing.assert_allclose(ref, exact, atol=ENGINE_ATOL)
    else:
        assert_bf16_close(ref, exact)


@pytest.mark.parametrize("trainable_stages", [1, 4])
def test_engines_agree_on_the_frozen_trunk_within_the_stated_tolerance(data, trainable_stages):
    from sktransfer._images import check_images

    X, y = data
    est = TransferClassifier(**FAST, precision="float32",
                             trainable_stages=trainable_stages).fit(X, y)
    described = est.__sktransfer_outputs__()
    outputs = {}
    for engine in ENGINES:
        trunk = described.trunk.replace(engine=engine)
        outputs[engine] = torch.cat([out for _, (out,) in described.feed.run(
            check_images(X), range(len(X)), fn=lambda x, _, t=trunk: t(described.network, x))])
    for engine in ENGINES[1:]:
        np.testing.assert_allclose(outputs[engine], outputs["torch"], atol=ENGINE_ATOL)


@pytest.mark.parametrize("layer", ["stage1", "pooled"])
def test_openvino_keeps_stem_and_first_stage_in_float32(data, layer):
    X, _ = data
    est = PretrainedFeatureExtractor(**dict(TINY, engine="openvino"), precision="bfloat16",
                                     layer=layer).fit(X)
    parts = est.trunk_.engine_part(est.model_).parts
    if layer == "stage1":  # the trunk ends before the second stage: float32 throughout
        assert [p for _, _, p in parts] == ["float32"]
    else:
        assert [p for _, _, p in parts] == ["float32", "bfloat16"]


def test_predict_explain_and_transform_leave_the_estimator_as_it_was(data, tmp_path):
    X, y = data
    clf = TransferClassifier(**FAST, memory=tmp_path).fit(X, y)
    ext = PretrainedFeatureExtractor(**TINY, memory=tmp_path).fit(X)
    for est, calls in [(clf, [clf.predict, clf.predict_proba, clf.explain, clf.score]),
                       (ext, [ext.transform])]:
        before = pickle.dumps(est)
        state = dict(est.__dict__)
        for call in calls:
            call(X, y) if call.__name__ == "score" else call(X)
        assert est.__dict__.keys() == state.keys()
        assert pickle.dumps(est) == before


@pytest.mark.parametrize("explicit", [False, True])
def test_an_engine_that_fails_at_predict_time_falls_back_for_that_call(data, monkeypatch,
                                                                       explicit):
    X, y = data
    engine = "onnxruntime" if explicit else "auto"
    est = TransferClassifier(**dict(FAST, engine=engine), precision="float32").fit(X, y)
    assert est.engine_ in ("onnxruntime", "openvino")
    ref = est.predict_proba(X)
    before = pickle.dumps(est)
    _process_cache.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("the engine's session cannot be created here")

    monkeypatch.setattr(_engines, "session", broken)
    monkeypatch.setattr(_engines, "compiled", broken)
    if explicit:
        with pytest.raises(RuntimeError, match="cannot be created here"):
            est.predict_proba(X)
        return
    with pytest.warns(UserWarning, match="cannot run this model's frozen part here.*"
                                         "RuntimeError.*torch runs it instead"):
        got = est.predict_proba(X)
    np.testing.assert_allclose(got, ref, atol=ENGINE_ATOL)
    assert pickle.dumps(est) == before  # engine_ is what fit decided
    monkeypatch.undo()  # the engine works again: it runs again
    _process_cache.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(est.predict_proba(X), ref)


def test_export_onnx_check_writes_nothing_into_the_users_memory(data, tmp_path):
    pytest.importorskip("onnxruntime")
    from sktransfer import export_onnx

    X, y = data
    memory = tmp_path / "memory"
    clf = TransferClassifier(**FAST, memory=memory).fit(X, y)

    def entries():
        return sorted(p.relative_to(memory) for p in memory.rglob("*.npy"))

    stored = entries()
    report = export_onnx(clf, tmp_path / "model.onnx")
    assert report.max_abs_diff["probabilities"] < ENGINE_ATOL
    assert entries() == stored  # no entry for the random check images
