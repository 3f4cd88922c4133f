"""sktransfer.dask and our estimators on a Dask LocalCluster (2 workers x 1 thread)."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import (
    ImageError,
    ImageWarning,
    PretrainedFeatureExtractor,
    TransferClassifier,
    _device,
)
from sktransfer._testing import recording

from .conftest import TINY, make_images

dd = pytest.importorskip("dask.dataframe")  # the dask extra: installed in CI
dask = pytest.importorskip("dask")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
skd = pytest.importorskip("sktransfer.dask")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    X, y = make_images(30)
    folder = tmp_path_factory.mktemp("png")
    paths = []
    for i, arr in enumerate(X):
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
        paths.append(str(folder / f"img{i:02d}.png"))
    return paths, y


@pytest.fixture(scope="module")
def extractor(files):
    return PretrainedFeatureExtractor(**TINY).fit(files[0])


# In-process transform runs torch with all the machine's threads, a worker's
# with one: on some CPUs oneDNN then sums in another order (float32 rounding).
same = dict(rtol=1e-5, atol=1e-6)


def _unpickled(client):
    def count():
        from sktransfer import _testing

        _testing.begin()  # counting starts on a worker's first call: compare differences
        return sum(n for (kind, *_), n in _testing.counts().items() if kind == "unpickled")

    return client.run(count)


def test_distributed_transform_equals_in_process(client, files, extractor):
    paths, _ = files
    expected = extractor.transform(paths)
    array = skd.transform(extractor, paths, partition_size=7)
    assert array.chunks[0] == (7, 7, 7, 7, 2)
    np.testing.assert_allclose(array.compute(), expected, **same)

    # a dask Series with its own index: the output keeps it, row for row
    index = pd.Index([f"cell-{i}" for i in range(len(paths))][::-1], name="id")
    series = dd.from_pandas(pd.Series(paths, index=index, name="path"), npartitions=3)
    frame = skd.transform(extractor, series).compute()
    assert list(frame.columns) == list(extractor.get_feature_names_out())
    assert frame.index.tolist() == series.index.compute().tolist()
    np.testing.assert_allclose(frame.loc[index].to_numpy(), expected, **same)

    bag = db.from_sequence(paths, npartitions=4)
    np.testing.assert_allclose(skd.transform(extractor, bag).compute(), expected, **same)


def test_model_reaches_each_worker_once(client, files, extractor):
    before = _unpickled(client)
    skd.transform(extractor, files[0], partition_size=3).compute()  # 10 tasks
    after = _unpickled(client)
    assert {w: after[w] - before[w] for w in after} == dict.fromkeys(after, 1)


def test_a_model_fetched_again_is_not_unpickled_again(files, extractor):
    # Dask's memory manager may drop a worker's broadcast copy between tasks
    # and fetch it again: the second arrival reuses the first's model.
    paths = files[0][:3]
    data = pickle.dumps(skd._Shipped(extractor))
    with recording() as counts:
        first, again = pickle.loads(data), pickle.loads(data)
        assert not counts  # nothing unpickled until a task uses it
        np.testing.assert_array_equal(first.estimator.transform(paths),
                                      extractor.transform(paths))
        assert again.estimator is first.estimator
    assert counts["unpickled", "PretrainedFeatureExtractor"] == 1


def test_classifier_predictions_and_probabilities(client, files):
    paths, y = files
    clf = TransferClassifier(**TINY, max_epochs=1).fit(paths, np.where(y, "crack", "ok"))
    series = dd.from_pandas(pd.Series(paths, name="path"), npartitions=2)
    labels = skd.transform(clf, series, method="predict").compute()
    assert labels.name == "prediction"
    np.testing.assert_array_equal(labels.to_numpy(), clf.predict(paths))
    proba = skd.transform(clf, paths, method="predict_proba", partition_size=8).compute()
    np.testing.assert_allclose(proba, clf.predict_proba(paths), atol=1e-6)


def test_unreadable_images_keep_rows_aligned(client, files, tmp_path):
    paths, _ = files
    est = PretrainedFeatureExtractor(**TINY, on_error="nan").fit(paths)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    mixed = paths[:5] + [str(broken)] + paths[5:10] + [str(tmp_path / "missing.png")]
    with pytest.warns(ImageWarning) as caught:
        out = skd.transform(est, mixed, partition_size=4).compute()
        _await_warnings(caught, 2)  # the workers' warnings reach this client as events
    assert np.isnan(out[[5, 11]]).all()
    # each names the row of X (not the position within its partition of 4)
    rows = sorted(i for w in caught if isinstance(w.message, ImageWarning)
                  for i, _, _ in w.message.problems)
    assert rows == [5, 11]
    assert any("X[11]" in str(w.message) and "missing.png" in str(w.message) for w in caught)
    np.testing.assert_allclose(out[:5], est.transform(paths[:5]), **same)
    np.testing.assert_allclose(out[6:11], est.transform(paths[5:10]), **same)


def _await_warnings(caught, n, timeout=20):
    import time

    deadline = time.monotonic() + timeout
    while sum(isinstance(w.message, ImageWarning) for w in caught) < n:
        assert time.monotonic() < deadline, "the workers' ImageWarnings did not arrive"
        time.sleep(0.1)


def test_unreadable_images_are_named_by_their_row_of_x(client, files, tmp_path):
    paths, _ = files
    strict = PretrainedFeatureExtractor(**TINY).fit(paths)
    labels = [f"cell-{i}" for i in range(8)]
    series = pd.Series(paths[:7] + [str(tmp_path / "missing.png")], index=labels)
    with pytest.raises(ImageError, match=r"X\[cell-7\] .*missing.png"):
        skd.transform(strict, dd.from_pandas(series, npartitions=2)).compute()
    with pytest.raises(ImageError, match=r"X\[7\] .*missing.png"):
        skd.transform(strict, list(series), partition_size=3).compute()


def test_killed_worker_loses_no_rows(client, files, extractor):
    paths = files[0] * 8  # 240 rows, 60 tasks
    expected = extractor.transform(files[0])
    lazy = skd.transform(extractor, paths, partition_size=4)
    # Dask's memory manager drops extra copies of data no task waits for every
    # 2 s: a model shipped when the graph was built would be left on one worker.
    time.sleep(5)
    future = client.compute(lazy)

    def model_holders(dask_scheduler):
        return [ws.address for key, ts in dask_scheduler.tasks.items()
                if str(key).startswith("_model-") for ws in ts.who_has or ()]

    # The victim holds the model (Dask's memory manager may have left it the
    # only copy): the model must be recomputed, not lost with it.
    deadline = time.monotonic() + 60
    while not (holders := client.run_on_scheduler(model_holders)) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = holders[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    while not client.processing().get(victim) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # mid-job; its nanny starts a new worker
    out = future.result(timeout=240)
    assert out.shape == (240, expected.shape[1])
    np.testing.assert_allclose(out, np.tile(expected, (8, 1)), **same)
    # Leave the cluster as the next tests expect it: the dead worker gone
    # from the scheduler, its replacement registered.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = client.scheduler_info()["workers"]
        if victim not in workers and len(workers) == 2:
            break
        time.sleep(0.1)
    client.wait_for_workers(2, timeout=120)


def test_to_parquet_writes_paths_and_features_atomically(client, files, extractor, tmp_path):
    paths, _ = files
    before = _unpickled(client)
    # 15 partitions: pandas reads part files in name order, part.10 before part.2
    # unless the names are padded
    target = skd.to_parquet(extractor, paths, tmp_path / "features", partition_size=2)
    after = _unpickled(client)
    # a list becomes a dask Series: the model is still shipped once per worker
    assert {w: after[w] - before[w] for w in after} == dict.fromkeys(after, 1)
    table = pd.read_parquet(target)
    assert table["path"].tolist() == paths
    np.testing.assert_allclose(table.drop(columns="path").to_numpy(),
                               extractor.transform(paths), **same)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        skd.to_parquet(extractor, paths, target)

    # A failing partition: the worker's exception, and nothing written.
    strict = PretrainedFeatureExtractor(**TINY).fit(paths)
    with pytest.raises(ImageError, match="missing.png"):
        skd.to_parquet(strict, paths + [str(tmp_path / "missing.png")], tmp_path / "failed",
                       partition_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]


def test_items_that_are_not_paths_are_listed_in_one_error(client, files, extractor):
    paths, _ = files
    values = pd.Series(paths[:6] + [3, None] + paths[6:9] + [b"x"])
    with dask.config.set({"dataframe.convert-string": False}):  # keep the objects as they are
        series = dd.from_pandas(values, npartitions=3)
    with pytest.raises(TypeError, match=r"3 item\(s\).*6: 3, 7: None, 11: b'x'"):
        skd.transform(extractor, series)
    # dask's default string dtype turns the numbers into text: the missing one remains
    with pytest.raises(TypeError, match=r"1 item\(s\).*7: <NA>"):
        skd.transform(extractor, dd.from_pandas(values, npartitions=3))
    with pytest.raises(ValueError, match=r"columns \['a', 'b'\]"):
        skd.transform(extractor, dd.from_pandas(pd.DataFrame({"a": paths, "b": paths}), 2))


def test_shared_memory_rerun_embeds_only_what_is_missing(client, files, tmp_path):
    paths, _ = files
    est = PretrainedFeatureExtractor(**TINY, memory=tmp_path / "cache").fit(paths)

    def written():
        from sktransfer import _testing

        _testing.begin()  # counting starts on a worker's first call: compare differences
        return _testing.counts()["embeddings", "written"]

    base = sum(client.run(written).values())
    skd.transform(est, paths[:12], partition_size=6).compute()  # "the job that failed"
    skd.transform(est, paths, partition_size=6).compute()
    assert sum(client.run(written).values()) - base == len(paths)


def test_grid_search_on_the_cluster_equals_one_process(client, files):
    import joblib

    paths, y = files
    search = GridSearchCV(TransferClassifier(**TINY, max_epochs=1), {"lr": [1e-3, 1e-2]},
                          cv=2)
    local = search.fit(paths, y).cv_results_
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(TransferClassifier(**TINY, max_epochs=1), {"lr": [1e-3, 1e-2]},
                              cv=2, n_jobs=-1).fit(paths, y).cv_results_
    for key in ("params", "split0_test_score", "split1_test_score", "rank_test_score"):
        assert list(remote[key]) == list(local[key]), key


def test_dask_ml_parallel_post_fit(client, files):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    paths, y = files
    frame = pd.DataFrame({"path": paths})
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY), LogisticRegression()).fit(frame, y)
    ddf = dd.from_pandas(frame, npartitions=3)
    wrapped = wrappers.ParallelPostFit(
        pipe, predict_proba_meta=np.empty((0, 2), dtype=np.float64))
    np.testing.assert_allclose(wrapped.predict_proba(ddf).compute(),
                               pipe.predict_proba(frame), atol=1e-6)


def test_worker_threads_gives_torch_the_workers_threads(monkeypatch):
    class Worker:
        class state:
            nthreads = 3

    before = torch.get_num_threads()
    monkeypatch.setattr(_device, "_dask_worker", lambda: Worker)
    with _device.worker_threads():
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_no_client_says_how_to_start_one(tmp_path):
    code = ("import sktransfer.dask as d\n"
            "try:\n    d._client(None)\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "Client(LocalCluster(" in out
