"""What ``memory=`` keeps is named by one versioned description of the trunk:
an entry of another version, or of another trunk, is never read."""

import shutil

import numpy as np
import pytest

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, _process_cache, _store
from sktransfer._testing import recording

from .conftest import TINY, make_images

pytestmark = pytest.mark.usefixtures("fresh_process_caches")


@pytest.fixture(scope="module")
def data():
    return make_images(8, size=32)


def _overwrite_with_other_numbers(memory, other_graph):
    """What another version might have written under the same description:
    arrays of the same shape with other values, the graph of another cut."""
    for path in memory.rglob("*.npy"):
        np.save(path, np.full_like(np.load(path), 7))
    for path in memory.rglob("*.onnx"):
        shutil.copyfile(other_graph, path)


def test_an_earlier_versions_entries_are_never_read(data, tmp_path, monkeypatch):
    """The report: a stage graph written by an older version under memory= was
    reused after an upgrade, and gave 8 features where 32 were computed."""
    X, _ = data
    params = dict(TINY, engine="onnxruntime", layer="stage2")
    # another cut's graph, to stand for what an older version meant by the same key
    PretrainedFeatureExtractor(**{**params, "layer": "stage1"}, memory=tmp_path / "other").fit(X)
    (other_graph,) = (tmp_path / "other").rglob("*.onnx")
    memory = tmp_path / "memory"
    monkeypatch.setattr(_store, "FORMAT_VERSION", _store.FORMAT_VERSION - 1)
    PretrainedFeatureExtractor(**params, memory=memory).fit(X).transform(X)
    monkeypatch.undo()
    _overwrite_with_other_numbers(memory, other_graph)
    _process_cache.clear()  # a new process, with the new version

    with recording() as counts:
        got = PretrainedFeatureExtractor(**params, memory=memory).fit(X).transform(X)
    assert counts["embeddings", "read"] == 0 and counts["graph", "exported"] == 1
    _process_cache.clear()
    expected = PretrainedFeatureExtractor(**params).fit(X).transform(X)
    np.testing.assert_array_equal(got, expected)


def test_an_earlier_versions_frozen_outputs_are_never_read(data, tmp_path, monkeypatch):
    X, y = data
    params = dict(TINY, max_epochs=1, batch_size=4, tta=False)
    monkeypatch.setattr(_store, "FORMAT_VERSION", _store.FORMAT_VERSION - 1)
    TransferClassifier(**params, memory=tmp_path).fit(X, y)
    monkeypatch.undo()
    _overwrite_with_other_numbers(tmp_path, None)
    with recording() as counts:
        got = TransferClassifier(**params, memory=tmp_path).fit(X, y).predict_proba(X)
    assert counts["frozen", "read"] == len(X)  # its own entries, written by this fit
    assert counts["frozen", "written"] == 4 * len(X)
    expected = TransferClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(got, expected)


def test_every_part_of_the_description_names_another_entry(data, tmp_path):
    X, _ = data
    trunk = PretrainedFeatureExtractor(**TINY, layer="stage2", precision="float32",
                                       memory=tmp_path).fit(X).trunk_
    graph, store = trunk.graph_key(), trunk.store().root
    # what the graph computes: another graph, and other stored outputs
    for change in [dict(backbone="timm/test_resnet"), dict(weights_id="0" * 64),
                   dict(cut=trunk.cut + 1), dict(pool=not trunk.pool), dict(layout="NHWC"),
                   dict(size=64)]:
        other = trunk.replace(**change)
        assert other.graph_key() != graph, change
        assert other.store().root != store, change
    # how it runs: the same graph, other stored outputs
    for change in [dict(precision="bfloat16"), dict(engine="openvino"),
                   dict(settings={**trunk.settings, "device_type": "cuda"})]:
        other = trunk.replace(**change)
        assert other.graph_key() == graph, change
        assert other.store().root != store, change


def test_the_format_version_is_written_beside_the_entries(data, tmp_path):
    import json

    X, _ = data
    PretrainedFeatureExtractor(**TINY, memory=tmp_path).fit(X).transform(X)
    (settings,) = tmp_path.rglob("settings.json")
    described = json.loads(settings.read_text())
    assert described["format"] == _store.FORMAT_VERSION
    assert described["kind"] == "embeddings" and described["backbone"] == TINY["backbone"]
