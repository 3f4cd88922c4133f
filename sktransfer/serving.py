"""Serve an exported model with ONNX Runtime, numpy and PIL only: no torch.

:func:`onnx_inputs` turns images, in any form the estimators accept, into
the input of a graph written by :func:`sktransfer.export_onnx`. This module
imports neither torch nor scikit-learn, and ``import sktransfer`` imports
nothing heavy until an estimator is used, so ``from sktransfer.serving import
onnx_inputs`` works on a machine with only ``numpy``, ``pillow`` and
``onnxruntime`` (and sktransfer installed without its dependencies:
``pip install --no-deps sktransfer``).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from ._images import ImageError, check_images, to_unit_float

__all__ = ["onnx_inputs"]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def _input_spec(model) -> dict:
    """``{"size": ..., "interpolation": ...}`` of a fitted estimator or an exported model."""
    if hasattr(model, "steps"):  # a scikit-learn Pipeline: its first step
        model = model.steps[0][1]
    pre = getattr(model, "preprocess_", None)
    if pre is not None:
        return {"size": int(pre["size"]), "interpolation": pre["interpolation"]}
    props = None
    if isinstance(model, (str, os.PathLike)):
        import onnx

        props = onnx.load(os.fspath(model), load_external_data=False).metadata_props
        props = {p.key: p.value for p in props}
    elif hasattr(model, "metadata_props"):  # an onnx.ModelProto
        props = {p.key: p.value for p in model.metadata_props}
    elif hasattr(model, "get_modelmeta"):  # an onnxruntime.InferenceSession
        props = model.get_modelmeta().custom_metadata_map
    if not props or "sktransfer.input" not in props:
        raise ValueError(
            f"{type(model).__name__} is neither a fitted sktransfer estimator nor a model "
            "written by sktransfer.export_onnx (no 'sktransfer.input' metadata).")
    return json.loads(props["sktransfer.input"])


def _resize(chw: np.ndarray, size: int, resample) -> np.ndarray:
    """One decoded image ``(C, H, W)`` -> ``(3, size, size)`` float32 in [0, 1].

    Each channel is resized as a float image (PIL mode ``F``), so 8-bit,
    16-bit and float images lose nothing to rounding; PIL's bicubic and
    bilinear filters antialias like the batched torch resize of the
    estimators.
    """
    x = to_unit_float(chw)
    if x.shape[1:] != (size, size):
        x = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((size, size), resample))
                      for c in x])
        np.clip(x, 0, 1, out=x)
    return np.broadcast_to(x, (3, size, size)) if x.shape[0] == 1 else x


def onnx_inputs(X, model) -> np.ndarray:
    """The input of an exported graph for the images ``X``, without torch.

    Decodes and resizes every image the way the estimator does (EXIF
    orientation applied, grayscale expanded to RGB, alpha dropped, 16-bit
    scaled, resized whole to the network's size with the backbone's
    interpolation, nothing cropped), using PIL and numpy only.

    Parameters
    ----------
    X : images
        File paths, PIL images or arrays, in any form the estimators accept.
    model : fitted estimator, Pipeline, path, onnx.ModelProto or onnxruntime.InferenceSession
        The fitted estimator (or pipeline) that was exported, or the exported
        model itself: its metadata holds the input size and interpolation.

    Returns
    -------
    images : ndarray of shape (n_samples, 3, size, size), float32
        RGB, values in [0, 1], in the order of ``X``: feed it to the graph's
        ``images`` input.

    Raises
    ------
    ImageError
        Listing every image that cannot be read, with its index and reason.

    Notes
    -----
    PIL resizes each image on its own (in float mode, per channel) and the
    estimators resize batches with torch; both antialias with the same
    bicubic kernel, and the pixels agree within about 1e-6 (tested).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.serving import onnx_inputs
    >>> from sktransfer import PretrainedFeatureExtractor
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    >>> extractor = PretrainedFeatureExtractor(image_size=32).fit(images)
    >>> onnx_inputs(images, extractor).shape
    (2, 3, 32, 32)
    """
    spec = _input_spec(model)
    size = int(spec["size"])
    resample = _RESAMPLE[spec["interpolation"]]
    problems = []
    source = check_images(X, skipped=problems)
    out = np.empty((len(source), 3, size, size), dtype=np.float32)
    bad = {i for i, _, _ in problems}
    for i in range(len(source)):
        if i in bad:
            continue
        image, problem = source.try_load(i, draft=size)
        if problem is None:
            out[i] = _resize(image, size, resample)
        else:
            problems.append(problem)
    if problems:
        raise ImageError(sorted(problems))
    return out
