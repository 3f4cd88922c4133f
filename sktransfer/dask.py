"""Embedding and prediction on a Dask cluster.

``pip install "sktransfer[dask]"``. A fitted estimator (or a Pipeline
starting with one) runs over image paths held in a dask DataFrame, Series,
Bag or a plain list, partition by partition, on the workers of a
``distributed`` client:

- the fitted model reaches each worker **once** (one task of the graph holds
  it with its inference engine's graph, so no worker exports it again), not
  once per partition;
- each task gives torch all the worker's threads (Dask workers start torch
  with one), and sktransfer's tasks on a worker take turns;
- the output is lazy and aligned with the input's partitions: the same
  index for a dask DataFrame or Series, the same order for a list or Bag;
- unreadable images follow the estimator's ``on_error`` (``"nan"``: NaN rows,
  rows stay aligned); a worker that dies mid-job has its tasks re-run by Dask,
  and every row appears exactly once;
- with ``memory=`` on the estimator pointing at a directory the workers
  share, a re-run after a failure embeds only the images not yet done.

See the user guide's "Scaling out" page.
"""

from __future__ import annotations

import os
import pickle
import shutil
import uuid
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["transform", "to_parquet"]

METHODS = ("transform", "predict", "predict_proba")
#: Paths per task when the input is a list.
DEFAULT_PARTITION_SIZE = 512


def _require():
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"sktransfer.dask needs dask and distributed ({exc.name} is missing): "
            'pip install "sktransfer[dask]".') from None


def _client(client):
    from distributed import default_client

    if client is not None:
        return client
    try:
        return default_client()
    except ValueError:
        raise ValueError(
            "No Dask client. Start one first: on this machine\n"
            "    from distributed import Client, LocalCluster\n"
            "    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))\n"
            "or connect to a cluster's scheduler with Client('tcp://host:8786'); "
            "then call again (it is found as the default client) or pass client=."
        ) from None


def _backbone_step(estimator):
    from sklearn.pipeline import Pipeline

    from ._base import BackboneEstimator

    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    return next((s for s in steps if isinstance(s, BackboneEstimator)), None)


# On a worker, the models it received are kept by shipment in the process
# cache "received": Dask's memory manager may drop a worker's copy between
# two tasks and fetch it again for the next; the model is then found there,
# not unpickled again.


class _Shipped:
    """A fitted estimator and its engine's graphs: what each worker unpickles once.

    Travels as bytes and a token; the first task on a worker that uses it
    unpickles it and puts the graphs into the worker's process cache, so the
    worker runs the engine right away instead of exporting the network again.
    A copy that reaches the worker again (same token) is not unpickled again.
    """

    def __init__(self, estimator):
        step = _backbone_step(estimator)
        outputs = None if step is None else step.__sktransfer_outputs__()
        trunk = None if outputs is None else outputs.trunk
        graphs = {} if trunk is None else trunk.graphs(outputs.network)
        self.token = uuid.uuid4().hex
        self.payload = pickle.dumps((estimator, graphs), protocol=pickle.HIGHEST_PROTOCOL)
        self._estimator = estimator

    def __getstate__(self):
        return {"token": self.token, "payload": self.payload}

    def __setstate__(self, state):
        self.__dict__.update(state, _estimator=None)

    @property
    def estimator(self):
        if self._estimator is None:
            from ._process_cache import cache

            def receive():
                estimator, graphs = pickle.loads(self.payload)
                for key, data in graphs.items():
                    cache("graphs").put(key, data, len(data))
                return estimator

            self._estimator = cache("received").get_or_put(
                self.token, receive, lambda _: len(self.payload))
        return self._estimator


def _output_spec(estimator, method: str):
    """Column names (``None``: one unnamed column) and dtype of ``method``'s output."""
    from sklearn.utils.validation import check_is_fitted

    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}.")
    if not hasattr(estimator, method):
        raise ValueError(f"{type(estimator).__name__} has no method {method!r}.")
    check_is_fitted(estimator)
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if method == "transform":
        return [str(c) for c in estimator.get_feature_names_out()], np.dtype(np.float32)
    from ._tasks import TargetScaler, Tasks

    classes = getattr(estimator, "classes_", None)
    # What sktransfer's own estimators say of their outputs; another final
    # step (a scikit-learn model after an extractor) has one target.
    describe = getattr(final, "__sktransfer_outputs__", None)
    encoder = None if describe is None else describe().encoder
    if isinstance(encoder, Tasks) and encoder.n_outputs > 1:  # several targets (a 2-D y)
        if method == "predict_proba":
            raise ValueError(
                f"method='predict_proba' of a classifier with {encoder.n_outputs} targets "
                "gives one array per target; use method='predict' (one column per target).")
        return [f"prediction{k}" for k in range(encoder.n_outputs)], encoder.label_dtype
    if method == "predict_proba":
        return [str(c) for c in classes], np.dtype(np.float32)
    if classes is not None:
        return None, np.asarray(classes).dtype
    if not isinstance(encoder, TargetScaler) or encoder.one_d:
        return None, np.dtype(np.float64)
    return [f"prediction{k}" for k in range(encoder.n_outputs)], np.dtype(np.float64)


def _check_paths(values, labels) -> None:
    """One error listing every item that is not a path."""
    bad = [(label, v) for label, v in zip(labels, values)
           if not isinstance(v, (str, os.PathLike))]
    if bad:
        shown = ", ".join(f"{label!r}: {v!r}" for label, v in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise TypeError(
            f"{len(bad)} item(s) of X are not image paths (str or os.PathLike): {shown}{more} "
            "(row label: value). Drop or fix them first, e.g. X.dropna().")


def _non_paths(part):
    # on the workers: the rows of a partition that are not paths
    import pandas as pd

    mask = [not isinstance(v, (str, os.PathLike)) for v in part]
    return pd.Series(part[mask].astype(object), index=part.index[mask])


def _items_of(part, estimator):
    """A partition's items as the estimator takes them."""
    import pandas as pd

    if isinstance(part, pd.DataFrame):
        if getattr(estimator, "feature_names_in_", None) is not None:
            return part  # fitted on a DataFrame with a path column
        return part.iloc[:, 0].tolist()
    if isinstance(part, pd.Series):
        return part.tolist()
    return list(part)


def _model(shipped):
    """The task that holds the model: its result is the shipment itself."""
    return shipped


def _rows_of(part, start):
    """The rows of ``X`` a partition holds: its index labels, or positions from ``start``."""
    import pandas as pd

    if isinstance(part, (pd.Series, pd.DataFrame)):
        return list(part.index)
    return None if start is None else list(range(start, start + len(part)))


def _in_rows(problems, rows):
    """``(index, item, reason)`` with the partition's positions made rows of ``X``."""
    return [(rows[i] if rows is not None else i, item, reason) for i, item, reason in problems]


def _apply(shipped, part, method, columns, dtype, shape, start=None):
    """One task: ``method`` on one partition.

    ``shape`` is what the task returns: ``"array"``, ``"frame"`` (a pandas
    object on the partition's index) or ``"paths"`` (that frame after a
    ``path`` column). ``start``: the position in ``X`` of a list's
    partition. Unreadable images are reported by their rows of ``X``, an
    :class:`ImageWarning` (``on_error="nan"``) on the client too.
    """
    import pandas as pd
    from distributed import warn

    from ._device import worker_threads
    from ._images import ImageError, ImageWarning

    estimator = shipped.estimator
    items = _items_of(part, estimator)
    rows = _rows_of(part, start)
    with worker_threads(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = getattr(estimator, method)(items) if len(items) else _empty(columns, dtype)
        except ImageError as exc:
            raise ImageError(_in_rows(exc.problems, rows)) from None
    for w in caught:
        if isinstance(w.message, ImageWarning) and w.message.problems:
            problems = _in_rows(w.message.problems, rows)
            # distributed.warn: on this worker and on every client of the scheduler
            warn(ImageWarning(f"{ImageError(problems)}\nTheir rows are NaN "
                              "(on_error='nan').", problems))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    out = np.asarray(out).astype(dtype, copy=False)
    if shape == "array":
        return out
    if columns is None:
        result = pd.DataFrame({"prediction": out}, index=part.index)
    else:
        result = pd.DataFrame(out, columns=columns, index=part.index)
    if shape == "paths":
        paths = [os.fspath(p) for p in (items.iloc[:, 0] if isinstance(items, pd.DataFrame)
                                        else items)]
        result = pd.concat([pd.DataFrame({"path": paths}, index=part.index), result], axis=1)
    return result


def _empty(columns, dtype):
    return np.empty((0,) if columns is None else (0, len(columns)), dtype=dtype)


def _series_of(X):
    """A dask DataFrame's path column (its only column), or the Series itself."""
    import dask.dataframe as dd

    if isinstance(X, dd.DataFrame):
        if len(X.columns) != 1:
            raise ValueError(
                f"X has columns {list(X.columns)}; pass the column of image paths, e.g. "
                "X['path'].")
        return X[X.columns[0]]
    return X


def _collection(estimator, X, *, client, method, partition_size, with_paths):
    """The lazy output of ``method`` over ``X`` and the client it runs on.

    ``with_paths`` (for :func:`to_parquet`): always a dask DataFrame, with a
    ``path`` column first; a list becomes a dask Series of paths.
    """
    _require()
    import dask
    import dask.array as da
    import dask.bag as db
    import dask.dataframe as dd
    import pandas as pd

    columns, dtype = _output_spec(estimator, method)
    client = _client(client)
    if partition_size is not None and int(partition_size) < 1:
        raise ValueError(f"partition_size={partition_size} must be a positive int.")

    # Paths are checked before anything is shipped: once, on the driver for
    # a list, on the cluster (one pass over the column) for a dask collection.
    if isinstance(X, (dd.DataFrame, dd.Series)):
        series = _series_of(X)
        bad = client.compute(
            series.map_partitions(_non_paths, meta=pd.Series([], dtype=object))).result()
        _check_paths(bad.tolist(), bad.index.tolist())
    elif isinstance(X, db.Bag):
        if with_paths:
            raise TypeError("to_parquet takes a dask DataFrame or Series, or a list of paths; "
                            "convert a Bag with bag.to_dataframe() first.")
    elif isinstance(X, (str, os.PathLike)) or not isinstance(
            X, (Sequence, np.ndarray, pd.Series)):
        raise TypeError(
            f"X must be a dask DataFrame or Series, a dask Bag, or a list of image paths; "
            f"got {type(X).__name__}.")
    else:
        X = list(X)
        _check_paths(X, range(len(X)))
        size = int(partition_size or DEFAULT_PARTITION_SIZE)
        if with_paths:
            X = dd.from_pandas(pd.Series(X, name="path", dtype=object), chunksize=size,
                               sort=True)

    # The model is one task of the graph, its bytes in it once; every task
    # refers to that task's key, and each worker fetches its result and
    # unpickles the model once. Not scattered: Dask's memory manager keeps as
    # few as one copy of scattered data, which is lost for good when that
    # worker dies; a task's result is recomputed from the graph instead.
    shipped = dask.delayed(_model, pure=False)(_Shipped(estimator))
    apply = dask.delayed(_apply, pure=True)
    n_cols = () if columns is None else (len(columns),)

    if isinstance(X, (dd.DataFrame, dd.Series)):
        meta_index = X._meta.index
        if columns is None:
            meta = pd.DataFrame({"prediction": np.empty(0, dtype)}, index=meta_index)
        else:
            meta = pd.DataFrame(np.empty((0, len(columns)), dtype), columns=columns,
                                index=meta_index)
        if with_paths:
            meta = pd.concat([pd.DataFrame({"path": pd.Series([], dtype=object)},
                                           index=meta_index), meta], axis=1)
        shape = "paths" if with_paths else "frame"
        outs = [apply(shipped, p, method, columns, dtype, shape) for p in X.to_delayed()]
        result = dd.from_delayed(outs, meta=meta, divisions=X.divisions, verify_meta=False)
        if columns is None and not with_paths:
            result = result["prediction"]
        return result, client

    if isinstance(X, db.Bag):
        outs = [apply(shipped, p, method, columns, dtype, "array") for p in X.to_delayed()]
        arrays = [da.from_delayed(o, shape=(np.nan, *n_cols), dtype=dtype) for o in outs]
        return da.concatenate(arrays), client

    arrays = [da.from_delayed(apply(shipped, X[s:s + size], method, columns, dtype, "array", s),
                              shape=(len(X[s:s + size]), *n_cols), dtype=dtype)
              for s in range(0, len(X), size)]
    if not arrays:
        return da.from_array(_empty(columns, dtype)), client
    return da.concatenate(arrays), client


def transform(estimator, X, *, client=None, method: str = "transform",
              partition_size: int | None = None):
    """Run a fitted estimator over image paths on a Dask cluster, lazily.

    Parameters
    ----------
    estimator : fitted estimator
        A :class:`~sktransfer.PretrainedFeatureExtractor`,
        :class:`~sktransfer.TransferClassifier`,
        :class:`~sktransfer.TransferRegressor`, or a Pipeline of them and
        scikit-learn steps.
    X : dask DataFrame or Series, dask Bag, or list of paths
        Image paths: a dask Series, or a dask DataFrame with one column (or
        the columns the estimator was fitted on); a Bag of paths; a list.
        Every item must be a ``str`` or ``os.PathLike``: the items that are
        not are listed in one error before anything runs (for a dask
        collection that reads the path column once).
    client : distributed.Client or None, default=None
        ``None``: the default client (the last one created).
    method : {"transform", "predict", "predict_proba"}, default="transform"
    partition_size : int or None, default=None
        Paths per task for a list (``None``: 512). A dask collection keeps
        its partitions: repartition it to change them.

    Returns
    -------
    dask DataFrame, dask Series or dask array
        Lazy. For a dask DataFrame or Series: a dask DataFrame with the
        input's index and divisions, columns ``get_feature_names_out()``
        (``transform``) or the classes (``predict_proba``), or a Series named
        ``"prediction"`` (``predict``). For a list or Bag: a dask array, one
        chunk per partition, rows in the input's order.

    Examples
    --------
    >>> from distributed import Client, LocalCluster           # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> paths = dd.read_parquet("images.parquet")["path"]      # doctest: +SKIP
    >>> features = sktransfer.dask.transform(extractor, paths)  # doctest: +SKIP
    >>> features.to_parquet("features.parquet")                # doctest: +SKIP
    """
    result, _ = _collection(estimator, X, client=client, method=method,
                            partition_size=partition_size, with_paths=False)
    return result


def to_parquet(estimator, X, path, *, client=None, method: str = "transform",
               partition_size: int | None = None, overwrite: bool = False, **kwargs):
    """Run a fitted estimator over image paths on a Dask cluster, into a Parquet dataset.

    Each row holds the image's ``path`` and the output of ``method`` (as
    :func:`transform`), under the input's index (a list's: its positions).
    The dataset is written to a temporary directory beside ``path`` and
    renamed into place when every partition is done: a job that fails (a
    worker's exception is re-raised with its traceback) leaves nothing
    behind, and ``path`` never holds half a dataset.

    Parameters
    ----------
    estimator, X, client, method, partition_size :
        As in :func:`transform` (a Bag: convert it with ``to_dataframe()``).
    path : str or path-like
        Directory of the dataset, on a file system every worker writes to
        (local for a :class:`~distributed.LocalCluster`, shared otherwise).
    overwrite : bool, default=False
        Replace an existing ``path``; otherwise an existing one is an error.
    **kwargs :
        Passed to :meth:`dask.dataframe.DataFrame.to_parquet`.

    Returns
    -------
    path : str
    """
    import pandas as pd

    path = os.fspath(path)
    if "://" in path:
        raise ValueError(
            f"to_parquet writes atomically to a file system path, not {path!r}; for an "
            "object store use transform(...).to_parquet(url), which is not atomic.")
    target = os.path.abspath(path.rstrip("/"))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it.")
    frame, client = _collection(estimator, X, client=client, method=method,
                                partition_size=partition_size, with_paths=True)
    tmp = f"{target}.sktransfer-tmp-{uuid.uuid4().hex[:8]}"
    try:
        with warnings.catch_warnings():
            # dask builds samples of the output column by column to plan and
            # run the write; pandas then warns about a fragmented frame.
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            # Zero-padded part names: readers that list files in name order
            # (pandas, pyarrow) then read the rows in the input's order.
            kwargs.setdefault("name_function", lambda i: f"part.{i:06d}.parquet")
            job = frame.to_parquet(tmp, compute=False, **kwargs)
            client.compute(job).result()
        if os.path.exists(target):
            old = f"{target}.sktransfer-old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
