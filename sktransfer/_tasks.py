"""The targets of the fine-tuned estimators: ``y`` in, the network's targets out, and back.

One encoder per estimator, fitted on ``y`` as scikit-learn's
:class:`~sklearn.preprocessing.LabelEncoder` and
:class:`~sklearn.preprocessing.StandardScaler` are, and kept as the fitted
``target_encoder_``:

- :class:`Tasks` (:class:`~sktransfer.TransferClassifier`): the classes of
  each column of ``y``. A 1-D ``y`` is the one-column case. scikit-learn's
  two kinds of 2-D class targets are taken as its forests take them:
  ``"multiclass-multioutput"``, k columns of class labels, strings or
  numbers per column (strings in one, integers in another): one softmax
  head per column; ``"multilabel-indicator"``, k columns of 0/1 (every
  column): one sigmoid per label.
- :class:`TargetScaler` (:class:`~sktransfer.TransferRegressor`): the
  weighted mean and standard deviation of each target column.

The backbone is shared; the heads are separate linear layers on its pooled
features (each initialised as a single-task head would be) whose logits are
concatenated, so the inference path, test-time flips and the frozen part's
stored outputs are those of a single target. A missing label (``None``,
NaN, pandas' NA) masks that task's loss for that image only. Each task's
loss is its weighted mean over the images labelled for it; the tasks'
losses are averaged with ``task_weights``.

Also here, given the encoded targets: the class weights
(:func:`class_weight_vectors`), the losses (:func:`classification_loss`,
:func:`regression_loss`) and the internal validation split (:func:`split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import type_of_target
from torch import nn

#: The code of a missing label in the encoded targets.
MISSING = -1


def _is_missing(value) -> bool:
    return (value is None or (isinstance(value, (float, np.floating)) and value != value)
            or type(value).__name__ == "NAType")


def missing_mask(y: np.ndarray) -> np.ndarray:
    """Where ``y`` has no label: ``None``, NaN or pandas' NA."""
    if y.dtype.kind == "f":
        return np.isnan(y)
    if y.dtype.kind != "O":
        return np.zeros(y.shape, dtype=bool)
    return np.vectorize(_is_missing, otypes=[bool])(y) if y.size else np.zeros(y.shape, bool)


def _label_type(value) -> str:
    if isinstance(value, (str, np.str_)):
        return "string"
    if isinstance(value, (Real, np.bool_)):
        return "number"
    return type(value).__name__


def check_targets(y, n_images: int) -> np.ndarray:
    """``y`` as an array of one target row per image, or a clear error."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None.")
    try:
        y = np.asarray(y)
    except ValueError:  # numpy refuses rows of different lengths
        raise ValueError("y is ragged: its rows have different lengths. Give one "
                         "target per image, or the same number of target columns "
                         "for every image (None or NaN for a missing label).") from None
    if y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D (n_samples, n_targets), got shape "
                         f"{y.shape}.")
    if len(y) != n_images:
        raise ValueError(
            f"X has {n_images} images but y has {len(y)} targets; they must "
            "have the same length.")
    return y


@dataclass(frozen=True)
class Tasks:
    """What the columns of a class target are, as the heads see them: the
    classifier's target encoder.

    Fitted with :meth:`fit`; :meth:`encode` turns labels into class codes
    (``(n, k)`` int64, :data:`MISSING` where unlabelled),
    :meth:`probabilities` and :meth:`labels` turn the network's logits back.
    """

    # "multiclass" (a 1-D y: one column), "multiclass-multioutput" or
    # "multilabel-indicator"
    kind: str
    classes: tuple  # one array of labels per column

    @classmethod
    def fit(cls, y: np.ndarray) -> Tasks:
        """The tasks of ``y`` (1-D, or 2-D with one column per task)."""
        if y.ndim == 2 and y.shape[1] > 1:
            return check_tasks(y)
        classes = np.unique(_labels_1d(y))
        if len(classes) < 2:
            raise ValueError(f"y has a single class ({classes[0]!r}); a classifier needs at "
                             "least two.")
        return cls("multiclass", (classes,))

    @property
    def n_outputs(self) -> int:
        """Columns of ``y`` (scikit-learn's ``n_outputs_``)."""
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.kind == "multilabel-indicator"

    @property
    def widths(self) -> tuple[int, ...]:
        """Logits of each task: one per class, or one sigmoid per label."""
        if self.multilabel:
            return (1,) * len(self.classes)
        return tuple(len(c) for c in self.classes)

    @property
    def head_widths(self) -> tuple[int, ...]:
        """The new head: one linear layer per task, of these widths."""
        return self.widths

    @property
    def n_logits(self) -> int:
        """Width of the network's output: all tasks' logits."""
        return int(sum(self.widths))

    @property
    def label_dtype(self) -> np.dtype:
        """dtype of predicted labels: the one every task's numbers share, else object."""
        dtypes = {c.dtype for c in self.classes}
        if len(dtypes) == 1 and all(c.dtype.kind in "biuf" for c in self.classes):
            return dtypes.pop()
        return np.dtype(object)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.widths)])

    @property
    def classes_(self):
        """scikit-learn's ``classes_``: one array, or a list of one per column."""
        return self.classes[0] if self.n_outputs == 1 else list(self.classes)

    def encode(self, y: np.ndarray) -> np.ndarray:
        """``(n, k)`` int64 class codes of ``y``; :data:`MISSING` where unlabelled.

        Raises a ``ValueError`` naming what differs when ``y`` has another
        number of columns than the fitted ``y``, or labels it did not have.
        """
        if self.kind != "multiclass":
            if y.ndim != 2 or y.shape[1] != self.n_outputs:
                got = "one column" if y.ndim == 1 or y.shape[1] == 1 else \
                    f"{y.shape[1]} columns"
                raise ValueError(f"y has {got}; this model was fitted on {self.n_outputs} "
                                 "target columns.")
            return encode(y, self)
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(f"y has {y.shape[1]} columns; this model was fitted on one.")
        labels = _labels_1d(y)
        unknown = np.setdiff1d(np.unique(labels), self.classes[0])
        if len(unknown):
            raise ValueError(f"y has labels {unknown.tolist()} not seen in the first fit "
                             f"({self.classes[0].tolist()}).")
        return np.searchsorted(self.classes[0], labels).astype(np.int64)[:, None]

    def label_weights(self, codes: np.ndarray) -> np.ndarray:
        """1 for an image with at least one label, else 0 (it takes no part,
        as one of weight 0)."""
        return (codes != MISSING).any(axis=1).astype(np.float64)

    def probabilities(self, logits: np.ndarray) -> list[np.ndarray]:
        """Per task, ``(n, n_classes)`` probabilities in ``classes`` order."""
        return probabilities(logits, self)

    def labels(self, proba: list[np.ndarray]) -> np.ndarray:
        """Predicted labels from :meth:`probabilities`: 1-D for one task, else
        ``(n, k)``."""
        if self.n_outputs == 1:
            return self.classes[0][proba[0].argmax(axis=1)]
        return labels(proba, self)


@dataclass(frozen=True)
class TargetScaler:
    """The regressor's target encoder: targets standardised with their
    (sample-weighted) mean and standard deviation, and scaled back.

    ``one_d``: ``y`` was 1-D, and predictions are too.
    """

    mean: np.ndarray
    scale: np.ndarray
    one_d: bool

    @classmethod
    def fit(cls, y: np.ndarray, weights: np.ndarray) -> TargetScaler:
        y2 = _numeric_targets(y)
        mean = np.average(y2, axis=0, weights=weights)
        std = np.sqrt(np.average((y2 - mean) ** 2, axis=0, weights=weights))
        return cls(mean, np.where(std > 0, std, 1.0), y.ndim == 1)

    @property
    def n_outputs(self) -> int:
        return len(self.mean)

    @property
    def head_widths(self) -> int:
        return self.n_outputs

    @property
    def n_logits(self) -> int:
        return self.n_outputs

    def encode(self, y: np.ndarray) -> np.ndarray:
        """Standardised float32 targets ``(n, n_targets)``."""
        y2 = _numeric_targets(y)
        if y2.shape[1] != self.n_outputs:
            raise ValueError(f"y has {y2.shape[1]} target column(s); this model was fitted on "
                             f"{self.n_outputs}.")
        return ((y2 - self.mean) / self.scale).astype(np.float32)

    def label_weights(self, targets: np.ndarray) -> float:
        return 1.0

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Network outputs in the units (and shape) of ``y``."""
        out = raw * self.scale + self.mean
        return out.ravel() if self.one_d else out


def _numeric_targets(y: np.ndarray) -> np.ndarray:
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError("y must hold numbers for a regressor.") from None
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every image needs a finite target.")
    return y.reshape(len(y), -1)


def _labels_1d(y: np.ndarray) -> np.ndarray:
    """Class labels as a 1-D array, refused with a reason if they are not."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D for a classifier, got shape {y.shape}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; every image needs a label.")
    kind = type_of_target(y)
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"Unknown label type: y is {kind!r}; expected class labels.")
    return y


def _columns(y: np.ndarray, missing: np.ndarray) -> list[np.ndarray]:
    """Each column's labels (missing ones left out), checked to be class labels."""
    columns = []
    for t in range(y.shape[1]):
        values = y[~missing[:, t], t]
        types = sorted({_label_type(v) for v in values})
        if len(types) > 1:
            examples = {}
            for v in values.tolist():  # plain Python values, shown as the user wrote them
                examples.setdefault(_label_type(v), v)
            shown = ", ".join(f"{k} {v!r}" for k, v in examples.items())
            raise ValueError(f"y column {t} mixes label types ({shown}); give each column "
                             "labels of one type.")
        if types and types[0] not in ("string", "number"):
            raise ValueError(f"y column {t} holds {types[0]} values; class labels must be "
                             "strings or numbers.")
        if types == ["number"]:
            values = np.asarray(values.tolist())
            if values.dtype.kind == "f" and not np.all(values == np.round(values)):
                example = values[values != np.round(values)].tolist()[0]
                raise ValueError(
                    f"y column {t} holds continuous values (e.g. {example!r}); a classifier "
                    "needs class labels: use TransferRegressor for real-valued targets.")
        elif types == ["string"]:
            values = np.asarray(values.tolist(), dtype=object)
        columns.append(values)
    return columns


def check_tasks(y: np.ndarray) -> Tasks:
    """The tasks of a 2-D class target with several columns, or a clear error."""
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"expected y of shape (n_samples, n_tasks >= 2), got {y.shape}.")
    missing = missing_mask(y)
    columns = _columns(y, missing)
    classes = []
    for t, values in enumerate(columns):
        labels = np.unique(values)
        if len(labels) < 2:
            found = f"a single class ({labels.tolist()[0]!r})" if len(labels) else "no labels"
            raise ValueError(f"y column {t} has {found}; every task needs at least two "
                             "classes among its labelled images.")
        classes.append(labels)
    # As scikit-learn's type_of_target: 0/1 in every column is a multilabel indicator.
    binary = all(c.dtype.kind in "biuf" and set(c.tolist()) == {0, 1} for c in classes)
    return Tasks("multilabel-indicator" if binary else "multiclass-multioutput",
                 tuple(classes))


def encode(y: np.ndarray, tasks: Tasks) -> np.ndarray:
    """``(n, k)`` int64 class codes of ``y`` under ``tasks``; :data:`MISSING` where unlabelled."""
    if y.ndim != 2 or y.shape[1] != len(tasks.classes):
        raise ValueError(f"y has shape {y.shape}; this model was fitted on "
                         f"{len(tasks.classes)} target columns.")
    missing = missing_mask(y)
    codes = np.full(y.shape, MISSING, dtype=np.int64)
    for t, (values, labels) in enumerate(zip(_columns(y, missing), tasks.classes)):
        known = np.isin(values, labels)
        if not known.all():
            raise ValueError(f"y column {t} has labels {np.unique(values[~known]).tolist()} "
                             f"not seen in the first fit ({labels.tolist()}).")
        codes[~missing[:, t], t] = np.searchsorted(labels, values)
    return codes


def check_task_weights(task_weights, n_tasks: int) -> np.ndarray:
    """``task_weights`` as ``n_tasks`` non-negative weights summing to 1."""
    if task_weights is None:
        return np.full(n_tasks, 1.0 / n_tasks)
    w = np.asarray(task_weights, dtype=np.float64)
    if w.shape != (n_tasks,):
        raise ValueError(f"task_weights has shape {w.shape}; y has {n_tasks} target "
                         f"column(s): give {n_tasks} weights.")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"task_weights={w.tolist()} must be finite, non-negative and not "
                         "all zero.")
    return w / w.sum()


def task_scales(codes: np.ndarray, weights: np.ndarray, task_weights: np.ndarray,
                class_weights=None):
    """Per task: its weight over the (weighted) fraction of the images labelled for it.

    Missing labels contribute a zero loss; dividing by the labelled fraction,
    each image weighted by its sample weight times its label's class weight,
    makes each task's loss its weighted mean over the images labelled for it.
    ``codes`` and ``weights`` are the training part's.
    """
    labelled = (codes != MISSING).astype(np.float64)
    if class_weights is not None:
        for t, vector in enumerate(class_weights):
            labelled[:, t] *= np.asarray(vector)[np.maximum(codes[:, t], 0)]
    total = weights.sum()
    per_task = (weights[:, None] * labelled).sum(axis=0)
    return np.where(per_task > 0, task_weights * total / np.maximum(per_task, 1e-300), 0.0)


def class_weight_vectors(class_weight, codes: np.ndarray, weights: np.ndarray,
                         tasks: Tasks):
    """Per task, the weight of each class (``class_weight``), or ``None``.

    ``"balanced"`` is computed on ``codes`` and ``weights``, the training
    part's, as scikit-learn's forests do.
    """
    if class_weight is None:
        return None
    k = codes.shape[1]
    if isinstance(class_weight, dict) and k > 1:
        raise ValueError(
            f"class_weight is one dict, but y has {k} columns: give a list of one dict "
            "per column, or 'balanced' (as scikit-learn's forests).")
    if isinstance(class_weight, list) and k == 1:
        raise ValueError("class_weight is a list (one dict per column of a 2-D y), but "
                         "y has one column: give a dict or 'balanced'.")
    per_column = class_weight if isinstance(class_weight, list) else [class_weight] * k
    if len(per_column) != k:
        raise ValueError(f"class_weight has {len(per_column)} dicts for the {k} columns "
                         "of y.")
    vectors = []
    for t, (cw, classes) in enumerate(zip(per_column, tasks.classes)):
        keep = (codes[:, t] != MISSING) & (weights > 0)
        column = codes[keep, t]
        vector = np.ones(len(classes))
        # Matched against the labels as given, as scikit-learn's forests do.
        vector[column] = compute_sample_weight(cw, np.asarray(classes[column].tolist()))
        vectors.append(vector)
    return vectors


def classification_loss(tasks: Tasks, codes: np.ndarray, weights: np.ndarray, *,
                        class_weight, task_weights, label_smoothing: float) -> TaskLoss:
    """The classifier's per-image loss; its statistics (task scales, balanced
    class weights) from ``codes`` and ``weights``, the training part's."""
    vectors = class_weight_vectors(class_weight, codes, weights, tasks)
    scales = task_scales(codes, weights, check_task_weights(task_weights, codes.shape[1]),
                         vectors)
    return TaskLoss(tasks.widths, tasks.multilabel, scales, label_smoothing, vectors)


def regression_loss(task_weights, n_targets: int) -> nn.Module:
    """The regressor's per-image loss: squared error, the (weighted) mean over targets."""
    if task_weights is None:
        return nn.MSELoss(reduction="none")  # the mean over targets, in the net's loss
    return TargetMSE(check_task_weights(task_weights, n_targets))


def split(codes: np.ndarray, validation_fraction: float | None, seed: int, *,
          classes: np.ndarray | None = None):
    """Training and validation positions of the internal validation split.

    ``validation_fraction=None``: everything trains. With ``classes`` (a
    classifier with one column of ``y``, ``codes`` indexing ``classes``):
    stratified by class, refused with a reason when a class would have no
    validation image; else a random split (no stratification over several
    columns, or for real targets).
    """
    n = len(codes)
    if validation_fraction is None:
        return np.arange(n), np.array([], dtype=int)
    n_valid = int(np.ceil(validation_fraction * n))
    if classes is None:
        if n - n_valid < 1:
            raise ValueError(f"validation_fraction={validation_fraction} leaves no training "
                             "images.")
        return next(ShuffleSplit(1, test_size=n_valid, random_state=seed).split(np.zeros(n)))
    column = codes[:, 0]
    counts = np.bincount(column, minlength=len(classes))
    if n_valid < len(classes) or counts.min() < 2:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves a class without "
            f"validation samples: {n_valid} validation images for {len(classes)} classes, "
            f"and class {classes[int(np.argmin(counts))]!r} has {counts.min()} image(s). "
            "Use more images, a larger validation_fraction, or validation_fraction=None "
            "(no early stopping).")
    splitter = StratifiedShuffleSplit(1, test_size=n_valid, random_state=seed)
    return next(splitter.split(np.zeros(n), column))


class MultiLinear(nn.Module):
    """One linear head per task on the same features; the logits, concatenated.

    Each head is initialised from the same state of torch's generator, so it
    starts where a single-task head built there would.
    """

    def __init__(self, n_features: int, widths):
        super().__init__()
        state = torch.get_rng_state()
        heads = []
        for width in widths:
            torch.set_rng_state(state)
            heads.append(nn.Linear(n_features, int(width)))
        self.heads = nn.ModuleList(heads)

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=1)


class TaskLoss(nn.Module):
    """Per-image loss of a multi-task classifier: the weighted mean of its tasks' losses.

    ``targets``: ``(n, k)`` class codes, :data:`MISSING` for a missing label
    (that task's loss is then 0 for that image, without gradient).
    ``scales``: from :func:`task_scales`. ``class_weights``: per task, the
    weight of each class (``class_weight``), which multiplies that task's
    loss only. One task (a 1-D ``y``) is the case ``k = 1``: its scale is 1
    and its loss is the cross-entropy itself.
    """

    def __init__(self, widths, multilabel: bool, scales, label_smoothing: float = 0.0,
                 class_weights=None):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.multilabel = bool(multilabel)
        self.register_buffer("scales", torch.as_tensor(np.asarray(scales), dtype=torch.float32))
        self.label_smoothing = float(label_smoothing)
        self.weighted = class_weights is not None
        for t, vector in enumerate(class_weights or ()):
            self.register_buffer(f"class_weights_{t}",
                                 torch.as_tensor(np.asarray(vector), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(len(logits))
        eps = self.label_smoothing
        for t, z in enumerate(torch.split(logits, self.widths, dim=1)):
            y = targets[:, t]
            code = y.clamp_min(0)  # a missing label's loss is computed, then masked out
            if self.multilabel:
                soft = code.to(z.dtype) * (1 - eps) + eps / 2
                loss = F.binary_cross_entropy_with_logits(z[:, 0], soft, reduction="none")
            else:
                loss = F.cross_entropy(z, code, reduction="none", label_smoothing=eps)
            if self.weighted:
                loss = loss * getattr(self, f"class_weights_{t}")[code]
            total = total + loss.masked_fill(y == MISSING, 0.0) * self.scales[t]
        return total

    def codes(self, logits: torch.Tensor) -> torch.Tensor:
        """``(n, k)`` predicted class codes."""
        parts = torch.split(logits, self.widths, dim=1)
        if self.multilabel:
            return torch.stack([(z[:, 0] > 0).long() for z in parts], dim=1)
        return torch.stack([z.argmax(1) for z in parts], dim=1)


def probabilities(logits: np.ndarray, tasks: Tasks) -> list[np.ndarray]:
    """Per task, ``(n, n_classes)`` probabilities in ``classes`` order."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    out = []
    for part in torch.split(z, tasks.widths, dim=1):
        if tasks.multilabel:
            p = torch.sigmoid(part[:, 0])
            out.append(torch.stack([1 - p, p], dim=1).numpy())
        else:
            out.append(part.softmax(dim=1).numpy())
    return out


def labels(proba: list[np.ndarray], tasks: Tasks) -> np.ndarray:
    """``(n, k)`` predicted labels from :func:`probabilities`, one column per task.

    Numbers when every task's labels are (the dtype they share), else objects.
    """
    columns = [c[p.argmax(axis=1)] for c, p in zip(tasks.classes, proba)]
    out = np.empty((len(proba[0]), len(columns)), dtype=tasks.label_dtype)
    for t, col in enumerate(columns):
        out[:, t] = col
    return out


class TargetMSE(nn.Module):
    """Per-image squared error of a multi-target regressor, averaged with weights."""

    def __init__(self, weights):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights),
                                                        dtype=torch.float32))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction - target) ** 2 * self.weights).sum(dim=1)
