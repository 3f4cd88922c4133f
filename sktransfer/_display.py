"""Pictures of what a fitted classifier gets wrong, in scikit-learn's Display style.

:class:`TopLossesDisplay` shows the images a classifier is most confidently
wrong about, each with its Grad-CAM heatmap (fastai's ``plot_top_losses``),
built as scikit-learn's displays are: ``from_estimator`` or
``from_predictions`` compute, ``plot`` draws and keeps the figure.
:func:`draw_images` is the one function that lays images (and heatmaps) out
on a grid, for these displays, :func:`sktransfer.plot_explanations` and the
report of ``sktransfer compare``.
"""

from __future__ import annotations

import numpy as np

from ._images import ImageInput, check_images
from ._inference import run
from ._inputs import Preprocess

#: Side of a drawn image (its resolution on the figure).
THUMBNAIL = 224


def draw_images(X: ImageInput, *, titles=None, heatmaps=None, n_cols: int = 4, axes=None,
                alpha: float = 0.45, cmap: str = "jet", size: int | None = None):
    """Images of ``X`` on a grid, each with its title and, if given, its heatmap.

    Parameters
    ----------
    X : images
        In any accepted form.
    titles : list of str, default=None
        One title per image.
    heatmaps : ndarray of shape (n_images, H, W), default=None
        Values in [0, 1], drawn over the images with ``alpha`` and ``cmap``.
    n_cols : int, default=4
        Images per row of a new figure.
    axes : array of matplotlib Axes, default=None
        Where to draw (at least one per image); a new figure if None.
    alpha, cmap :
        Opacity and colour map of the heatmaps.
    size : int, default=None
        Side the images are resized to (the heatmaps' by default, else
        :data:`THUMBNAIL`).

    Returns
    -------
    axes : ndarray of matplotlib Axes
        One per image, then any left over (switched off).
    """
    import matplotlib.pyplot as plt

    source = check_images(X)
    n = len(source)
    if heatmaps is not None:
        heatmaps = np.asarray(heatmaps)
        if heatmaps.ndim != 3 or len(heatmaps) != n:
            raise ValueError(f"heatmaps must have shape (n_images={n}, H, W); got "
                             f"{heatmaps.shape}.")
        size = size or heatmaps.shape[1]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries for {n} images.")
    if axes is None:
        n_cols = max(1, min(n_cols, n))
        n_rows = max(1, int(np.ceil(n / n_cols)))
        _, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.8 * n_rows),
                               squeeze=False)
    axes = np.asarray(axes).ravel()
    if len(axes) < n:
        raise ValueError(f"{len(axes)} axes for {n} images.")
    pre = Preprocess(size or THUMBNAIL, (0, 0, 0), (1, 1, 1))  # resize only
    for pos, (images,) in run(source, range(n), preprocess=pre, batch_size=32):
        for i, image in zip(pos, images):
            ax = axes[i]
            ax.imshow(image.permute(1, 2, 0).numpy())
            if heatmaps is not None:
                ax.imshow(heatmaps[i], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    return axes


class TopLossesDisplay:
    """The images a classifier is most confidently wrong about, with its heatmaps.

    Among the images whose predicted class is not the true one, those with
    the highest loss (the negative log-probability of the true class), each
    titled with the predicted class and its probability, the true class,
    and the loss, with a Grad-CAM heatmap of the predicted class over it
    where the classifier can explain itself
    (:meth:`TransferClassifier.explain`). fastai's ``plot_top_losses``, in
    scikit-learn's Display style: create it with :meth:`from_estimator` or
    :meth:`from_predictions`, draw it with :meth:`plot`.

    Parameters
    ----------
    X : images
        The images shown, most confident mistake first.
    y_true, y_pred : ndarray
        Their true and predicted classes.
    proba_pred : ndarray
        The probability of the predicted class.
    losses : ndarray
        The negative log-probability of the true class.
    indices : ndarray of int
        Their positions in the ``X`` the display was created from.
    heatmaps : ndarray of shape (n, H, W) or None, default=None
        Where the classifier found the evidence for its prediction.

    Attributes
    ----------
    figure_ : matplotlib Figure
        The figure, once :meth:`plot` has drawn it.
    axes_ : ndarray of matplotlib Axes
        One per image.

    See Also
    --------
    sklearn.metrics.ConfusionMatrixDisplay : How many of each class go where.
    sktransfer.plot_explanations : Heatmaps over any images.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import TopLossesDisplay, TransferClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 60, size=(16, 32, 32), dtype=np.uint8)
    >>> y = np.array(["ok", "crack"] * 8)
    >>> clf = TransferClassifier(image_size=32, max_epochs=1, random_state=0).fit(X, y)
    >>> display = TopLossesDisplay.from_estimator(clf, X, y, n=4)
    >>> len(display.indices) <= 4, display.figure_ is not None
    (True, True)
    """

    def __init__(self, *, X, y_true, y_pred, proba_pred, losses, indices, heatmaps=None):
        self.X = X
        self.y_true = y_true
        self.y_pred = y_pred
        self.proba_pred = proba_pred
        self.losses = losses
        self.indices = indices
        self.heatmaps = heatmaps

    @classmethod
    def from_predictions(cls, y_true, y_proba, X, *, classes, heatmaps=None, n: int = 9,
                         plot: bool = True, n_cols: int = 3, axes=None):
        """The most confident mistakes among predictions already made.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True classes.
        y_proba : array-like of shape (n_samples, n_classes)
            Predicted probabilities, columns in ``classes`` order.
        X : images
            The images, aligned with ``y_true``.
        classes : array-like of shape (n_classes,)
            The classes of ``y_proba``'s columns (``classes_``).
        heatmaps : ndarray of shape (n_samples, H, W) or callable, default=None
            Heatmaps aligned with ``X``, or a function ``(positions,
            predicted classes) -> heatmaps`` called on the mistakes shown
            only (Grad-CAM is costly).
        n : int, default=9
            How many mistakes to show at most.
        plot : bool, default=True
            Draw it (:meth:`plot`) right away.
        n_cols : int, default=3
            Images per row.
        axes : array of matplotlib Axes, default=None
            Where to draw.

        Returns
        -------
        display : TopLossesDisplay
        """
        classes = np.asarray(classes)
        y_true = np.asarray(y_true)
        proba = np.asarray(y_proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
            raise ValueError(f"y_proba must have shape (n_samples={len(y_true)}, "
                             f"n_classes={len(classes)}); got {proba.shape}.")
        position = {c: k for k, c in enumerate(classes.tolist())}
        unknown = sorted({str(t) for t in y_true.tolist() if t not in position})
        if unknown:
            raise ValueError(f"y_true has labels {unknown} that are not among classes "
                             f"{classes.tolist()}.")
        true_col = np.array([position[t] for t in y_true.tolist()], dtype=int)
        pred_col = proba.argmax(axis=1)
        losses = -np.log(np.clip(proba[np.arange(len(proba)), true_col], 1e-12, 1.0))
        wrong = np.flatnonzero(pred_col != true_col)
        order = wrong[np.argsort(-losses[wrong], kind="stable")][:n]
        source = check_images(X)
        if len(source) != len(y_true):
            raise ValueError(f"X has {len(source)} images but y_true has {len(y_true)}.")
        shown = [source.items[i] for i in order]
        if callable(heatmaps):
            maps = heatmaps(order, classes[pred_col[order]]) if len(order) else None
        elif heatmaps is not None:
            maps = np.asarray(heatmaps)[order]
        else:
            maps = None
        display = cls(X=shown, y_true=y_true[order], y_pred=classes[pred_col[order]],
                      proba_pred=proba[order, pred_col[order]], losses=losses[order],
                      indices=order, heatmaps=maps)
        return display.plot(n_cols=n_cols, axes=axes) if plot else display

    @classmethod
    def from_estimator(cls, estimator, X, y, *, n: int = 9, heatmaps: bool | str = "auto",
                       plot: bool = True, n_cols: int = 3, axes=None):
        """The most confident mistakes of a fitted classifier on ``X``.

        Parameters
        ----------
        estimator : fitted classifier
            With ``predict_proba`` and ``classes_`` (a
            :class:`TransferClassifier`, or a pipeline of
            :class:`PretrainedFeatureExtractor` and a classifier).
        X : images
            In any form the estimator takes.
        y : array-like of shape (n_samples,)
            True classes.
        n : int, default=9
            How many mistakes to show at most.
        heatmaps : bool or "auto", default="auto"
            Grad-CAM heatmaps of the predicted classes (``estimator.explain``),
            computed for the mistakes shown only; ``"auto"``: when the
            estimator can explain itself.
        plot : bool, default=True
            Draw it right away.
        n_cols : int, default=3
            Images per row.
        axes : array of matplotlib Axes, default=None
            Where to draw.

        Returns
        -------
        display : TopLossesDisplay
        """
        explains = hasattr(estimator, "explain")
        if heatmaps is True and not explains:
            raise ValueError(f"heatmaps=True, but {type(estimator).__name__} has no explain "
                             "method (TransferClassifier has); use heatmaps=False.")
        source = check_images(X)

        def explain(positions, predicted):
            return estimator.explain([source.items[i] for i in positions], target=predicted)

        use = explain if (explains and heatmaps) else None
        return cls.from_predictions(np.asarray(y), estimator.predict_proba(X), X,
                                    classes=estimator.classes_, heatmaps=use, n=n,
                                    plot=plot, n_cols=n_cols, axes=axes)

    def titles(self) -> list[str]:
        """Each image's title: predicted class and probability, true class, loss."""
        return [f"{p} ({q:.2f}), true: {t}\nloss {loss:.2f}"
                for p, q, t, loss in zip(self.y_pred, self.proba_pred, self.y_true,
                                         self.losses)]

    def plot(self, *, n_cols: int = 3, axes=None, alpha: float = 0.45, cmap: str = "jet"):
        """Draw the images, their titles and heatmaps.

        Parameters
        ----------
        n_cols : int, default=3
            Images per row of a new figure.
        axes : array of matplotlib Axes, default=None
            Where to draw; a new figure if None.
        alpha, cmap :
            Opacity and colour map of the heatmaps.

        Returns
        -------
        display : TopLossesDisplay
            With ``figure_`` and ``axes_``.
        """
        import matplotlib.pyplot as plt

        if len(self.indices) == 0:
            if axes is None:
                _, ax = plt.subplots(figsize=(4, 1.2))
                axes = np.array([ax])
            axes = np.asarray(axes).ravel()
            axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
            for ax in axes:
                ax.set_axis_off()
        else:
            axes = draw_images(self.X, titles=self.titles(), heatmaps=self.heatmaps,
                               n_cols=n_cols, axes=axes, alpha=alpha, cmap=cmap)
        self.axes_ = axes
        self.figure_ = axes[0].figure
        return self
