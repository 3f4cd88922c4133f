"""``memory=`` on the fine-tuned estimators: the frozen part's outputs kept
per image and view, so a search computes each image's frozen part once."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sktransfer import TransferClassifier, TransferRegressor, _process_cache
from sktransfer._testing import recording

from .conftest import TINY, make_images

# tta=False: the counts below are of predictions from the identity view (the
# classifier's default TTA reads all four: test_regressor_and_tta_read_the_stored_views)
FAST = dict(TINY, max_epochs=2, batch_size=8, tta=False)


@pytest.fixture(autouse=True)
def counts():
    _process_cache.clear()  # a new process: entries come from disk
    with recording() as counts:
        yield counts


def _fresh(counts):
    _process_cache.clear()
    counts.clear()


def _counts(counts):
    return counts["frozen", "written"], counts["frozen", "read"]


def test_memory_gives_the_model_and_predictions_of_a_fit_without_it(images, tmp_path, counts):
    X, y = images
    plain = TransferClassifier(**FAST).fit(X, y)
    stored = TransferClassifier(**FAST, memory=tmp_path).fit(X, y)
    assert _counts(counts) == (len(X) * 4, 0)  # each image as each of its four flips
    # one answer: the same model and the same predictions, bit for bit
    np.testing.assert_array_equal(stored.predict_proba(X), plain.predict_proba(X))
    assert _counts(counts) == (len(X) * 4, len(X))  # prediction: the identity view, read

    _fresh(counts)
    again = TransferClassifier(**FAST, memory=tmp_path).fit(X, y)
    assert _counts(counts) == (0, len(X) * 4)
    np.testing.assert_array_equal(again.predict_proba(X), stored.predict_proba(X))
    assert (tmp_path / "sktransfer-frozen").is_dir()


def test_grid_search_runs_each_images_frozen_part_once(tmp_path, counts):
    X, y = make_images(16)
    search = GridSearchCV(TransferClassifier(**FAST, memory=tmp_path),
                          {"lr": [1e-3, 3e-3], "dropout": [0.0, 0.5]},
                          cv=StratifiedKFold(2, shuffle=True, random_state=0))
    search.fit(X, y)
    written, read = _counts(counts)
    # 4 candidates x 2 folds + the refit: every image's four views computed once.
    assert written == len(X) * 4
    # The first candidate's second fold trains on the images whose identity
    # view its first fold predicted; the three others and the refit read all.
    half = len(X) // 2
    assert read == half + half + 3 * 2 * (half * 4 + half) + len(X) * 4

    plain = GridSearchCV(TransferClassifier(**FAST), {"lr": [1e-3, 3e-3], "dropout": [0.0, 0.5]},
                         cv=StratifiedKFold(2, shuffle=True, random_state=0)).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               plain.cv_results_["mean_test_score"], atol=1 / len(X) + 1e-9)


@pytest.mark.parametrize("params", [{"augment": True}, {"trainable_stages": "gradual"},
                                    {"trainable_stages": "all"}])
def test_fits_that_cannot_reuse_frozen_outputs_bypass_memory(images, tmp_path, params, counts):
    X, y = images
    est = TransferClassifier(**FAST, **params, memory=tmp_path).fit(X, y)
    assert not est.frozen_precomputed_
    assert counts["frozen", "written"] == 0


def test_another_cut_point_or_size_is_another_entry(images, tmp_path, counts):
    X, y = images
    TransferClassifier(**FAST, memory=tmp_path).fit(X, y)
    first = counts["frozen", "written"]
    TransferClassifier(**FAST, trainable_stages=0, memory=tmp_path).fit(X, y)
    TransferClassifier(**{**FAST, "image_size": 40}, memory=tmp_path).fit(X, y)
    assert counts["frozen", "written"] == 3 * first
    assert len(list((tmp_path / "sktransfer-frozen").iterdir())) == 3


def test_units_trained_by_an_earlier_fit_are_not_taken_for_pretrained(images, tmp_path):
    X, y = images
    # The first fit trains every unit; the warm start then freezes all but
    # the head: its frozen part is the trained units, not the initial ones.
    est = TransferClassifier(**FAST, trainable_stages="all", warm_start=True, memory=tmp_path)
    est.fit(X, y)
    TransferClassifier(**FAST, trainable_stages=0, memory=tmp_path).fit(X, y)  # pretrained
    plain = clone(est).set_params(memory=None)
    plain.fit(X, y)  # the same first fit, without memory
    est.set_params(trainable_stages=0).fit(X, y)
    plain.set_params(trainable_stages=0).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), plain.predict_proba(X))
    assert len(list((tmp_path / "sktransfer-frozen").iterdir())) == 2


def test_regressor_and_tta_read_the_stored_views(images, tmp_path, counts):
    X, _ = images
    y = X.mean(axis=(1, 2, 3)) / 255
    reg = TransferRegressor(**{**FAST, "tta": True}, memory=tmp_path).fit(X, y)
    written = counts["frozen", "written"]
    assert written == len(X) * 4
    plain = TransferRegressor(**{**FAST, "tta": True}).fit(X, y)
    np.testing.assert_array_equal(reg.predict(X), plain.predict(X))
    assert counts["frozen", "written"] == written  # TTA's four flips were all stored


def test_engine_graph_of_the_frozen_part_is_kept_under_memory(images, tmp_path):
    X, y = images
    TransferClassifier(**{**FAST, "engine": "onnxruntime"}, memory=tmp_path).fit(X, y)
    assert list((tmp_path / "sktransfer-onnx").glob("*.onnx"))


def test_frozen_units_are_hashed_in_fit_only(images, tmp_path, monkeypatch):
    from sktransfer._network import BackboneNetwork

    X, y = images
    calls = []
    digest = BackboneNetwork.weights_id
    monkeypatch.setattr(BackboneNetwork, "weights_id",
                        lambda self, cut: calls.append(cut) or digest(self, cut))
    est = TransferClassifier(**FAST, memory=tmp_path).fit(X, y)
    assert len(calls) == 1  # the fit's own
    for _ in range(3):
        est.predict(X)
    assert len(calls) == 1  # decided in fit: predictions read trunk_
    est.set_params(warm_start=True).fit(X, y)  # a fit may change the frozen units
    est.predict(X)
    assert len(calls) == 2


# -- within a memory budget: in memory, on disk, or batch by batch ---------------------------


def _fit_bounded(X, y, working_memory, **params):
    from sklearn import config_context

    with config_context(working_memory=working_memory):
        return TransferClassifier(**{**FAST, **params}).fit(X, y)


def test_frozen_outputs_in_memory_on_disk_or_per_batch_train_the_same(images, tmp_path,
                                                                      monkeypatch):
    """Within scikit-learn's working_memory the frozen outputs are held in
    memory; beyond it, in a mapped file; where the disk cannot hold them
    either, the frozen part runs batch by batch: one model, bit for bit."""
    from sktransfer._training import frozen

    X, y = images
    monkeypatch.setattr(frozen.tempfile, "tempdir", str(tmp_path))
    written = []
    original = frozen.FrozenOutputs.compute.__func__

    def spy(cls, *args, **kwargs):
        stored = original(cls, *args, **kwargs)
        written.append(None if stored is None else stored.where)
        assert not list(tmp_path.iterdir())  # the file has no name on disk
        return stored

    monkeypatch.setattr(frozen.FrozenOutputs, "compute", classmethod(spy))
    in_memory = _fit_bounded(X, y, 1024)
    on_disk = _fit_bounded(X, y, 0.01)  # 10 kB: less than the outputs
    monkeypatch.setattr(frozen, "DISK_MARGIN", 1 << 60)  # no disk has that much room
    with pytest.warns(UserWarning, match=r"more than working_memory \(0 MiB\) and the free "
                                         r"space of .*computed batch by batch"):
        per_batch = _fit_bounded(X, y, 0.01)
    assert written == ["memory", "disk", None]
    assert in_memory.frozen_precomputed_ and on_disk.frozen_precomputed_
    assert not per_batch.frozen_precomputed_
    expected = in_memory.predict_proba(X)
    np.testing.assert_array_equal(on_disk.predict_proba(X), expected)
    np.testing.assert_array_equal(per_batch.predict_proba(X), expected)


def test_the_budget_holds_the_training_and_validation_parts_together(images, monkeypatch):
    from sktransfer._training import frozen

    X, y = images
    where = []
    original = frozen.FrozenOutputs.compute.__func__
    monkeypatch.setattr(frozen.FrozenOutputs, "compute", classmethod(
        lambda cls, *a, **kw: where.append(kw["budget"]) or original(cls, *a, **kw)))
    fitted = _fit_bounded(X, y, 1024, validation_fraction=0.25, patience=None)
    assert fitted.frozen_precomputed_
    train_bytes = where[0] - where[1]  # what the training part took of the budget
    assert where[0] == 1024 * 2**20 and 0 < train_bytes < where[0]


@pytest.mark.parametrize("ending", ["failure", "kill"])
def test_a_failed_or_killed_fit_leaves_no_file(images, tmp_path, ending):
    """The mapped file has no name once open: nothing is left, whether the fit
    raises (a NaN loss) or its process is killed mid-epoch."""
    import signal
    import subprocess
    import sys
    import textwrap

    X, y = images
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    work = tmp_path / "tmp"
    work.mkdir()
    script = textwrap.dedent(f"""
        import os, signal, tempfile
        import numpy as np, sklearn
        from sktransfer import TransferClassifier, _network
        from sktransfer._training import callbacks
        tempfile.tempdir = {str(work)!r}
        def second_epoch(self, net, **kwargs):
            if len(net.history) == 2:
                if {ending!r} == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                original_forward = _network.TopNetwork.forward
                _network.TopNetwork.forward = lambda m, x: original_forward(m, x) * float("nan")
        callbacks.SeedEpoch.on_epoch_begin = second_epoch
        X, y = np.load({str(tmp_path / 'X.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})
        with sklearn.config_context(working_memory=0.01):
            try:
                TransferClassifier(**{dict(FAST)!r}).fit(X, y)
            except FloatingPointError:
                print("raised")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    if ending == "kill":
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    else:
        assert done.returncode == 0 and "raised" in done.stdout, done.stderr[-2000:]
    assert not list(work.iterdir())
