"""Export a fitted estimator or pipeline to one ONNX file, for serving without torch.

The graph's input, ``images``: float32, shape ``(batch, 3, size, size)``
(NCHW, RGB), values in [0, 1], ``size`` the estimator's ``image_size_``, the
batch dimension dynamic: what :func:`sktransfer.onnx_inputs` makes from any
accepted ``X``. Normalisation, test-time flips and the softmax are inside the
graph. The torch part goes through ``torch.onnx.export`` (the dynamo
exporter), the scikit-learn steps after an extractor through skl2onnx; the two
graphs are joined with :mod:`onnx.compose`.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.base import is_classifier, is_regressor
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._export import INPUT, OPSET, ExportError, export_torch
from ._images import check_images
from ._inference import apply_view
from ._inputs import iter_batches
from ._io import atomic_write
from ._trunk import TrunkModule

ML_OPSET = 3


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely the file matches the estimator.

    Attributes
    ----------
    path : str
        The ``.onnx`` file.
    outputs : list of str
        Names of the graph's outputs.
    opset : int
        The ONNX opset of the default domain.
    file_size : int
        Size of the file in bytes.
    export_seconds : float
        Wall time of the export, checks excluded.
    n_check : int
        Images in the check batch.
    max_abs_diff : dict
        For each numeric output, the maximum absolute difference between
        ONNX Runtime and the estimator run at float32, on identical input
        tensors.
    label_agreement : float or None
        Share of the check batch whose ONNX label equals the estimator's
        (classifiers only).
    """

    path: str
    outputs: list
    opset: int
    file_size: int
    export_seconds: float
    n_check: int
    max_abs_diff: dict
    label_agreement: float | None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------
# The torch part


class _Graph(torch.nn.Module):
    """What the exported graph computes, from ``images`` in [0, 1] on.

    ``kind``: ``"features"`` (the extractor), ``"logits"`` (the classifier:
    its softmax) or ``"prediction"`` (the regressor: scaled back to ``y``'s
    units). Test-time flips average the network's outputs before the softmax,
    as ``predict_proba`` does.
    """

    def __init__(self, network, preprocess: dict, kind: str, views=("identity",),
                 stop: int | None = None, y_mean=None, y_scale=None, ravel=False):
        super().__init__()
        # a stage of the extractor: its output, globally average-pooled
        self.network = network if stop is None else TrunkModule(network, stop, pool=True)
        self.kind = kind
        self.views = tuple(views)
        self.ravel = ravel
        self.register_buffer("mean", torch.tensor(preprocess["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess["std"]).view(1, 3, 1, 1))
        if y_mean is not None:
            self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32))
            self.register_buffer("y_scale", torch.as_tensor(y_scale, dtype=torch.float32))

    def forward(self, images):
        x = (images - self.mean) / self.std
        out = torch.stack([self.network(apply_view(x, v)) for v in self.views]).mean(0)
        if self.kind == "logits":
            return out.softmax(dim=1)
        if self.kind == "prediction":
            out = out * self.y_scale + self.y_mean
            return out.reshape(-1) if self.ravel else out
        return out


def _graph_module(estimator, outputs) -> tuple[_Graph, str]:
    """The :class:`_Graph` of a fitted estimator (described by ``outputs``,
    its :class:`~sktransfer._outputs.Outputs`) and the name of its output."""
    if outputs.kind == "classes" and outputs.encoder.n_outputs > 1:
        raise ExportError(
            f"This TransferClassifier has {outputs.encoder.n_outputs} targets (a 2-D y); "
            "export covers one target: its graph's outputs are one probability matrix and "
            "one label. Fit one model per target to export, or serve this one with predict.")
    network = copy.deepcopy(outputs.network).float().cpu().eval()
    network = network.to(memory_format=torch.contiguous_format)
    pre = outputs.feed.preprocess
    pre = {"mean": pre.mean.flatten().tolist(), "std": pre.std.flatten().tolist()}
    if outputs.kind == "features":
        trunk = outputs.trunk  # the units the features need, as the engines cut them
        if trunk.layer_module is not None:
            raise ExportError(
                f"layer={estimator.layer!r} ({trunk.layer_module}) is inside a unit of "
                f"{estimator.backbone}, which the exporter cannot cut; export "
                f"layer='pooled' or a stage that ends a unit: "
                f"{[s for s in network.stages if s in network.unit_names]}.")
        return _Graph(network, pre, "features", stop=trunk.cut), "features"
    if outputs.kind == "classes":
        return _Graph(network, pre, "logits", outputs.views), "probabilities"
    scaler = outputs.encoder
    return _Graph(network, pre, "prediction", outputs.views, y_mean=scaler.mean,
                  y_scale=scaler.scale, ravel=scaler.one_d), "prediction"


# --------------------------------------------------------------------------
# The scikit-learn steps


def _final_kind(estimator) -> str:
    if is_classifier(estimator):
        return "classifier"
    if is_regressor(estimator):
        return "regressor"
    return "transformer"


def _convert_steps(steps: list, n_features: int, opset: int):
    """skl2onnx's graph of ``steps`` (name, estimator) fed with ``features``."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:
        raise ImportError(
            "exporting a pipeline needs skl2onnx: pip install 'sktransfer[onnx]'") from exc

    def convert(sub_steps):
        pipe = Pipeline(sub_steps)
        final = sub_steps[-1][1]
        options = {id(final): {"zipmap": False}} if is_classifier(final) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_sklearn(
                pipe, initial_types=[("features", FloatTensorType([None, n_features]))],
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET}, options=options)

    try:
        return convert(steps)
    except Exception as whole:
        # Name the step skl2onnx cannot convert: the first that fails alone
        # (the shapes after the failing step do not matter).
        # (numbered as in the whole pipeline: the extractor is step 1)
        for i, (name, step) in enumerate(steps, start=2):
            try:
                convert([(name, step)])
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                raise ExportError(
                    f"pipeline step {i} {name!r} ({type(step).__name__}) cannot be "
                    f"converted by skl2onnx ({type(exc).__name__}: {reason}).") from exc
        raise ExportError(f"skl2onnx could not convert the pipeline's steps: {whole}") from whole


# --------------------------------------------------------------------------
# Assembling the graph


def _rename_outputs(model, names: dict):
    """Rename graph outputs through Identity nodes (``names``: old -> new)."""
    from onnx import helper

    graph = model.graph
    for out in graph.output:
        if out.name in names:
            new = names[out.name]
            graph.node.append(helper.make_node("Identity", [out.name], [new],
                                               name=f"rename_{new}"))
            out.name = new
    return model


def _add_label(model, classes: np.ndarray):
    """Append ``label = classes[argmax(probabilities)]`` to a classifier's graph."""
    from onnx import TensorProto, helper, numpy_helper

    if classes.dtype.kind in "iub":
        const = numpy_helper.from_array(classes.astype(np.int64), "classes")
        elem = TensorProto.INT64
    elif classes.dtype.kind == "f":
        const = numpy_helper.from_array(classes.astype(np.float64), "classes")
        elem = TensorProto.DOUBLE
    elif all(isinstance(c, str) for c in classes.tolist()):
        const = numpy_helper.from_array(np.array(classes.tolist(), dtype=object), "classes")
        elem = TensorProto.STRING
    else:
        kinds = sorted({type(c).__name__ for c in classes.tolist()})
        raise ExportError(
            f"classes_ of types {kinds} cannot be stored in an ONNX tensor (numbers or "
            "strings only); encode the labels as strings or integers before fitting.")
    graph = model.graph
    graph.initializer.append(const)
    graph.node.extend([
        helper.make_node("ArgMax", ["probabilities"], ["label_index"], axis=1, keepdims=0,
                         name="label_argmax"),
        helper.make_node("Gather", ["classes", "label_index"], ["label"], axis=0,
                         name="label_gather"),
    ])
    label = helper.make_tensor_value_info("label", elem, ["batch"])
    graph.output.insert(0, label)
    return model


def _metadata(estimator, preprocess, outputs: list) -> dict:
    from . import __version__

    return {
        "sktransfer.version": __version__,
        "sktransfer.estimator": _describe(estimator),
        "sktransfer.input": json.dumps({
            "name": INPUT, "dtype": "float32", "layout": "NCHW", "channels": "RGB",
            "size": int(preprocess.size), "range": [0.0, 1.0],
            "interpolation": preprocess.interpolation}),
        "sktransfer.outputs": json.dumps(outputs),
    }


def _describe(estimator) -> str:
    if isinstance(estimator, Pipeline):
        return "Pipeline(" + ", ".join(type(s).__name__ for _, s in estimator.steps) + ")"
    return type(estimator).__name__


def _split(estimator):
    """``(sktransfer estimator, remaining scikit-learn steps)`` of what to export."""
    from ._base import BackboneEstimator
    from ._extractor import PretrainedFeatureExtractor

    if isinstance(estimator, Pipeline):
        steps = [(n, s) for n, s in estimator.steps if s not in (None, "passthrough")]
        if not steps or not isinstance(steps[0][1], PretrainedFeatureExtractor):
            first = type(steps[0][1]).__name__ if steps else "nothing"
            raise ExportError(
                f"a pipeline is exported when its first step is a PretrainedFeatureExtractor; "
                f"this one starts with {first}.")
        for i, (name, step) in enumerate(steps[1:], start=2):
            if isinstance(step, BackboneEstimator):
                raise ExportError(
                    f"pipeline step {i} {name!r} ({type(step).__name__}) runs a network on "
                    "images; only the first step of an exported pipeline may.")
        head = steps[0][1]
        check_is_fitted(head)
        for name, step in steps[1:]:
            try:
                check_is_fitted(step)
            except Exception as exc:
                raise ExportError(f"pipeline step {name!r} is not fitted: fit the pipeline "
                                  "before exporting it.") from exc
        return head, steps[1:]
    if not isinstance(estimator, BackboneEstimator):
        raise ExportError(
            f"{type(estimator).__name__} is not an sktransfer estimator or a pipeline that "
            "starts with PretrainedFeatureExtractor.")
    check_is_fitted(estimator)
    return estimator, []


def export_onnx(estimator, path, *, X=None, opset: int = OPSET) -> ExportReport:
    """Export a fitted estimator or pipeline to one ONNX file.

    The graph takes a batch of preprocessed images and returns the
    estimator's outputs, so a service needs only ONNX Runtime, numpy and PIL
    (see :func:`sktransfer.onnx_inputs` for the input).

    - input ``images``: float32, ``(batch, 3, size, size)``, RGB, values in
      [0, 1], ``size = image_size_``; the batch dimension is dynamic;
    - outputs: ``features`` (:class:`PretrainedFeatureExtractor`, or a
      pipeline ending in a transformer), ``label`` (the original labels) and
      ``probabilities`` (a classifier), ``prediction`` (a regressor).

    Normalisation, test-time flips (``tta``) and the softmax are in the
    graph, which runs at float32: it matches the estimator with
    ``precision="float32"``, not the bf16 autocast of ``precision="auto"``
    on a CPU with native bf16 (within bf16 noise of it).

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
        A :class:`PretrainedFeatureExtractor`, :class:`TransferClassifier` or
        :class:`TransferRegressor`, or a :class:`~sklearn.pipeline.Pipeline`
        whose first step is a :class:`PretrainedFeatureExtractor` followed by
        steps skl2onnx converts (``StandardScaler``, ``PCA``,
        ``LogisticRegression``, ...).
    path : str or path
        Where to write the ``.onnx`` file. It is written to a temporary file
        next to it and renamed: a failed export leaves no file behind.
    X : images, default=None
        Images to check the file on (any form the estimator accepts); by
        default 8 random images.
    opset : int, default=20
        ONNX opset of the graph.

    Returns
    -------
    report : ExportReport
        Outputs, opset, file size, export time, and the maximum absolute
        difference to the estimator at float32 on the check batch (and the
        label agreement for classifiers).

    Raises
    ------
    ExportError
        If the estimator, a pipeline step or the backbone cannot be
        exported; the message names it and says why.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import PretrainedFeatureExtractor, export_onnx, onnx_inputs
    >>> images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    >>> extractor = PretrainedFeatureExtractor(image_size=32).fit(images)
    >>> report = export_onnx(extractor, "extractor.onnx")  # doctest: +SKIP
    >>> import onnxruntime  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession("extractor.onnx")  # doctest: +SKIP
    >>> session.run(None, {"images": onnx_inputs(images, extractor)})[0].shape  # doctest: +SKIP
    (4, 1280)
    """
    import onnx

    path = Path(path)
    head, steps = _split(estimator)
    described = head.__sktransfer_outputs__()
    start = time.perf_counter()
    module, output = _graph_module(head, described)
    size = described.feed.preprocess.size
    if not steps:
        model = export_torch(module, size, output, opset)
        if output == "probabilities":
            model = _add_label(model, np.asarray(described.encoder.classes[0]))
    else:
        model = export_torch(module, size, "features", opset)
        skl = _convert_steps(steps, described.width, opset)
        model = _join(model, skl, _final_kind(steps[-1][1]))
    outputs = [o.name for o in model.graph.output]
    for key, value in _metadata(estimator, described.feed.preprocess, outputs).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "sktransfer"
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    seconds = time.perf_counter() - start
    data = model.SerializeToString()
    report = _check(described, steps, data, X, outputs)
    atomic_write(path, data)
    return ExportReport(path=str(path), outputs=outputs, opset=opset, file_size=len(data),
                        export_seconds=round(seconds, 3), **report)


def _join(features_model, skl_model, kind: str):
    """The feature graph feeding skl2onnx's graph; outputs renamed to ours."""
    import onnx
    from onnx import compose

    # skl2onnx writes the lowest opset its operators need; merge_models wants
    # one opset per domain (and one IR version): bring it to the torch graph's.
    opset = {o.domain: o.version for o in features_model.opset_import}[""]
    skl_opset = {o.domain: o.version for o in skl_model.opset_import}.get("", opset)
    if skl_opset != opset:
        skl_model = onnx.version_converter.convert_version(skl_model, opset)
    skl_model = compose.add_prefix(skl_model, "skl_")
    ir = min(features_model.ir_version, skl_model.ir_version)
    features_model.ir_version = skl_model.ir_version = ir
    opsets = {o.domain: o for o in features_model.opset_import}
    for o in skl_model.opset_import:
        if o.domain not in opsets:
            features_model.opset_import.append(onnx.helper.make_opsetid(o.domain, o.version))
        elif opsets[o.domain].version != o.version:
            # e.g. ai.onnx.ml: the higher version runs the older one's operators
            version = max(o.version, opsets[o.domain].version)
            opsets[o.domain].version = o.version = version
    merged = compose.merge_models(features_model, skl_model,
                                  io_map=[("features", "skl_features")])
    outs = [o.name for o in merged.graph.output]
    if kind == "classifier":
        names = {outs[0]: "label", outs[1]: "probabilities"}
    elif kind == "regressor":
        names = {outs[0]: "prediction"}
    else:
        names = {outs[0]: "features"}
    return _rename_outputs(merged, names)


def _check_batch(feed, X) -> np.ndarray:
    """Preprocessed check images ``(n, 3, size, size)`` in [0, 1], float32."""
    pre = feed.preprocess
    if X is None:
        rng = np.random.default_rng(0)
        return rng.random((8, 3, pre.size, pre.size), dtype=np.float32)
    source = check_images(X)
    parts = [batch.numpy() for _, batch in iter_batches(
        source, range(len(source)), feed.batch_size, pre, feed.n_jobs, normalize=False)]
    return np.concatenate(parts)


def _expected(described, steps: list, images: np.ndarray) -> dict:
    """What the estimator (and the pipeline's other steps) give at float32,
    run by torch, storing nothing: the reference the file is checked against."""
    reference = described.float32()
    raw = reference.raw(check_images(images))
    if steps:
        rest = Pipeline(steps)
        kind = _final_kind(steps[-1][1])
        if kind == "classifier":
            expected = {"label": rest.predict(raw)}
            if hasattr(rest, "predict_proba"):  # skl2onnx's scores otherwise: not compared
                expected["probabilities"] = rest.predict_proba(raw)
            return expected
        if kind == "regressor":
            return {"prediction": rest.predict(raw)}
        return {"features": rest.transform(raw)}
    encoder = reference.encoder
    if reference.kind == "classes":
        proba = encoder.probabilities(raw)
        return {"probabilities": proba[0], "label": encoder.labels(proba)}
    if reference.kind == "targets":
        return {"prediction": encoder.decode(raw)}
    return {"features": raw}


def float32_reference(estimator, X) -> dict:
    """What a fitted sktransfer estimator gives for ``X`` run by torch at
    float32, storing nothing: the reference :func:`export_onnx` checks a
    file against (``"features"``; ``"probabilities"`` and ``"label"``;
    ``"prediction"``)."""
    return _expected(estimator.__sktransfer_outputs__(), [], X)


def _check(described, steps: list, data: bytes, X, outputs: list) -> dict:
    """Run the file in ONNX Runtime and the estimator at float32 on one batch."""
    import onnxruntime as ort

    batch = _check_batch(described.feed, X)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = dict(zip(outputs, session.run(None, {INPUT: batch})))
    # The estimator's own path on the same tensors: a stack of images of the
    # network's size is not resized, only normalised.
    expected = _expected(described, steps, batch.transpose(0, 2, 3, 1))
    diffs, agreement = {}, None
    for name, value in expected.items():
        if name == "label":
            agreement = float(np.mean(np.asarray(got[name]).astype(value.dtype) == value))
            continue
        if name not in got:
            continue
        value = np.asarray(value, dtype=np.float64)
        diffs[name] = float(np.max(np.abs(np.asarray(got[name], np.float64).reshape(
            value.shape) - value)))
    return {"n_check": len(batch), "max_abs_diff": diffs, "label_agreement": agreement}
