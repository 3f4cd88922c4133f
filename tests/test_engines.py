"""engine=: ONNX Runtime runs the frozen part, exported once per settings."""

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, _engines, _process_cache
from sktransfer._process_cache import cache

from .conftest import TINY, assert_bf16_close, make_images

ORT = dict(TINY, engine="onnxruntime")
EXACT = dict(TINY, precision="float32")  # torch at float32: what ONNX Runtime computes


@pytest.fixture
def exports(monkeypatch):
    """Counts graph exports; starts from an empty process cache."""
    _process_cache.clear()
    calls = []
    export = _engines._export

    def counting(module, example):
        calls.append(example.shape[-1])
        return export(module, example)

    monkeypatch.setattr(_engines, "_export", counting)
    yield calls
    _process_cache.clear()


@pytest.mark.parametrize("layer", ["pooled", "stage2"])
def test_extractor_onnxruntime_equals_torch_float32(images, exports, layer):
    X, _ = images
    ort = PretrainedFeatureExtractor(**ORT, layer=layer).fit(X)
    assert ort.engine_ == "onnxruntime"
    ref = PretrainedFeatureExtractor(**EXACT, layer=layer).fit(X)
    np.testing.assert_allclose(ort.transform(X), ref.transform(X), atol=1e-5)
    assert len(exports) == 1


def test_auto_engine_and_layers_inside_a_unit(images, exports):
    X, _ = images
    expected = _engines.resolve("auto", device=torch.device("cpu"), owner="test")
    assert expected in ("onnxruntime", "openvino")  # both installed by the test extra
    assert PretrainedFeatureExtractor(**dict(TINY, engine="auto")).fit(X).engine_ == expected
    inner = dict(TINY, layer="blocks.1.0")  # inside the unit blocks.1
    auto = PretrainedFeatureExtractor(**dict(inner, engine="auto")).fit(X)
    assert auto.engine_ == "torch"
    with pytest.raises(ValueError, match="inside a unit.*engine='torch'"):
        PretrainedFeatureExtractor(**dict(inner, engine="onnxruntime")).fit(X)


def test_graph_is_exported_once_per_settings_and_kept_under_memory(images, exports, tmp_path):
    X, _ = images
    first = PretrainedFeatureExtractor(**ORT, memory=tmp_path).fit(X)
    first.transform(X)
    clone(first).fit(X).transform(X)  # same settings: the process's graph
    assert len(exports) == 1
    PretrainedFeatureExtractor(**dict(ORT, image_size=40)).fit(X)  # another size
    assert len(exports) == 2
    assert len(list((tmp_path / "sktransfer-onnx").glob("*.onnx"))) == 1
    cache("graphs").clear()  # a new process: the graph comes from memory's directory
    clone(first).fit(X)
    assert len(exports) == 2


def test_session_uses_torchs_thread_budget(images, exports):
    X, _ = images
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in a Dask worker with one thread
        PretrainedFeatureExtractor(**ORT).fit(X).transform(X)
        (key, n), = cache("sessions")
        assert n == 1
        assert cache("sessions").get((key, n)).get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)


def test_openvino_shares_the_cores_when_given_fewer_threads(images, exports):
    pytest.importorskip("openvino")
    X, _ = images
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # a Dask worker with one thread, next to others
        PretrainedFeatureExtractor(**dict(ORT, engine="openvino")).fit(X).transform(X)
    finally:
        torch.set_num_threads(threads)
    models = [cache("compiled").get(k) for k in cache("compiled")]
    assert models and all(m.get_property("INFERENCE_NUM_THREADS") == 1 for m in models)
    # pinned, each process's single thread could land on the same core
    expected = (os.cpu_count() or 1) <= 1
    assert all(bool(m.get_property("ENABLE_CPU_PINNING")) is expected for m in models)


def test_a_model_loaded_where_its_engine_is_missing(images, exports, monkeypatch):
    pytest.importorskip("openvino")
    X, _ = images
    fitted = PretrainedFeatureExtractor(**dict(ORT, engine="openvino", precision="float32"))
    expected = fitted.fit(X).transform(X)
    data = pickle.dumps(fitted)
    installed = _engines.available
    monkeypatch.setattr(_engines, "available",
                        lambda engine: engine != "openvino" and installed(engine))
    loaded = pickle.loads(data)
    with pytest.raises(ImportError, match=r"engine='openvino' needs onnx, onnxscript.*"
                                          r"pip install onnx onnxscript openvino"):
        loaded.transform(X)
    # as if fitted with engine="auto" on a machine with openvino: torch runs this
    # call, and the fitted estimator is left as it was
    loaded = pickle.loads(data)
    loaded.trunk_ = loaded.trunk_.replace(requested="auto")
    before = pickle.dumps(loaded)
    with pytest.warns(UserWarning, match="engine 'openvino' cannot run.*torch runs it instead"):
        got = loaded.transform(X)
    assert loaded.engine_ == "openvino"
    assert pickle.dumps(loaded) == before
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_classifier_frozen_part_in_onnxruntime(images, exports):
    X, y = images
    params = dict(max_epochs=2, augment="flips", dropout=0.0)
    ort = TransferClassifier(**ORT, **params).fit(X, y)
    assert ort.engine_ == "onnxruntime" and ort.frozen_precomputed_
    ref = TransferClassifier(**EXACT, **params).fit(X, y)
    np.testing.assert_allclose(ort.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    assert len(exports) == 1  # the frozen part: fit and predict share one graph
    again = pickle.loads(pickle.dumps(ort))  # no session in the pickle
    np.testing.assert_allclose(again.predict_proba(X), ort.predict_proba(X), atol=1e-6)


def test_grid_search_exports_the_frozen_part_once(exports):
    X, y = make_images(n=16)
    search = GridSearchCV(TransferClassifier(**ORT, max_epochs=1),
                          {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert search.best_estimator_.engine_ == "onnxruntime"
    assert len(exports) == 1  # 2 candidates x 2 folds + the refit


def test_nothing_fixed_to_export_runs_torch(images, exports):
    X, y = images
    for stages in ("all", "gradual"):
        clf = TransferClassifier(**ORT, trainable_stages=stages, max_epochs=1).fit(X, y)
        assert clf.engine_ == "torch"
    assert exports == []


def test_openvino_engine(images, exports):
    X, _ = images
    ref = PretrainedFeatureExtractor(**EXACT).fit(X).transform(X)
    f32 = PretrainedFeatureExtractor(**dict(ORT, engine="openvino", precision="float32")).fit(X)
    assert f32.engine_ == "openvino"
    np.testing.assert_allclose(f32.transform(X), ref, atol=1e-4)
    bf16 = PretrainedFeatureExtractor(**dict(ORT, engine="openvino", precision="bfloat16"))
    assert_bf16_close(bf16.fit(X).transform(X), ref)
    # bf16: up to the end of the first stage in float32, a graph of its own
    # (test_one_answer.py: test_openvino_keeps_stem_and_first_stage_in_float32)
    assert len(exports) == 3
    PretrainedFeatureExtractor(**ORT).fit(X)  # ONNX Runtime: float32's whole graph
    assert len(exports) == 3


def test_auto_rule(monkeypatch):
    from sktransfer import _device

    cpu = torch.device("cpu")
    monkeypatch.setattr(_engines, "available", lambda engine: True)
    monkeypatch.setattr(_device, "cpu_has_amx", lambda: True)
    assert _engines.resolve("auto", device=cpu, owner="x") == "openvino"
    monkeypatch.setattr(_device, "cpu_has_amx", lambda: False)
    assert _engines.resolve("auto", device=cpu, owner="x") == "onnxruntime"
    monkeypatch.setattr(_engines, "available", lambda engine: engine == "torch")
    assert _engines.resolve("auto", device=cpu, owner="x") == "torch"
    with pytest.raises(ImportError, match="pip install onnx onnxscript openvino"):
        _engines.resolve("openvino", device=cpu, owner="x")
    assert _engines.resolve("auto", device=torch.device("meta"), owner="x") == "torch"


def test_process_caches_keep_the_most_recently_used_entries_within_their_budget():
    from sktransfer._process_cache import BoundedCache

    lru = BoundedCache("test", max_bytes=10)
    lru.put("a", 1, 4)
    lru.put("b", 2, 4)
    assert lru.get("a") == 1  # used: "b" is now the oldest
    lru.put("c", 3, 4)  # 12 bytes > 10: the least recently used goes
    assert lru.keys() == ["a", "c"] and lru.nbytes == 8
    assert lru.get("b") is None
    lru.put("big", 4, 100)  # the newest entry always stays
    assert lru.keys() == ["big"]
    assert all(c.max_bytes > 0 for c in _process_cache.CACHES.values())
