"""Grad-CAM heatmaps for fine-tuned classifiers, and a plot that overlays them.

Grad-CAM (Selvaraju et al., ICCV 2017): the last convolutional feature map
``A`` (channels ``k``), weighted by the spatial mean of the gradient of the
class score with respect to it, ``ReLU(sum_k mean(dS/dA_k) A_k)``, upsampled
to the input and scaled to [0, 1] per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._images import ImageInput, check_images
from ._layout import SPATIAL, channels_first, guess_layout


def grad_cam(network, x: torch.Tensor, targets: torch.Tensor | None,
             logits: slice = slice(None), binary: bool = False, start: int = 0,
             size: tuple | None = None) -> torch.Tensor:
    """``(n, H, W)`` Grad-CAM maps of ``targets`` for a normalised batch ``x``.

    ``targets=None`` explains each image's predicted class (from the same
    forward pass). ``logits``: the head's outputs of the task explained (a
    multi-task head concatenates them); ``binary``: that task is one sigmoid,
    whose class 1 is explained by its logit and class 0 by its negative.
    ``network`` is a
    :class:`~sktransfer._network.BackboneNetwork` with a head; the map is
    taken at the output of its last unit that is still a feature map, channels
    first or last (``network.layout_of``). ``start``: ``x`` is the output of
    the first ``start`` units (the frozen trunk's), a feature map itself;
    ``size``: the input images' side (the maps' resolution). Runs with
    gradients enabled (the inference path's ``mode="grad"``).
    """
    # The input carries the gradient: the parameters need none.
    h = x.clone().requires_grad_(True)
    feature = layout = None
    if start:
        given = network.layout_of(network.unit_names[start - 1]) or guess_layout(h)
        if h.ndim == 4 and given in SPATIAL:
            feature, layout = h, given
    for i in range(start, network.n_units):
        h = network.unit(i)(h)
        unit_layout = network.layout_of(network.unit_names[i]) or guess_layout(h)
        if h.ndim == 4 and unit_layout in SPATIAL:
            feature, layout = h, unit_layout
    if feature is None:
        raise ValueError("The backbone has no spatial feature map to explain.")
    z = network.head(h.flatten(1))[:, logits]
    if binary:
        targets = (z[:, 0] > 0).long() if targets is None else targets
        score = torch.where(targets == 1, z[:, 0], -z[:, 0]).sum()
    else:
        targets = z.argmax(dim=1) if targets is None else targets
        score = z.gather(1, targets.view(-1, 1)).sum()
    grads = channels_first(torch.autograd.grad(score, feature)[0], layout)
    feature = channels_first(feature, layout)  # (n, C, H, W): a channels-last map permuted
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feature).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=size or x.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak


def _task_logits(tasks, task):
    """The classes of the task explained, its slice of the logits, and whether
    it is one sigmoid."""
    if tasks.n_outputs == 1:
        if task not in (None, 0):
            raise ValueError(f"task={task!r}: this model has one target; leave task=None.")
        return tasks.classes[0], slice(None), False
    k = tasks.n_outputs
    if task is None or not isinstance(task, (int, np.integer)) or not 0 <= task < k:
        raise ValueError(f"task={task!r}: this model has {k} targets (a 2-D y); pass "
                         f"task=<column index in 0..{k - 1}> to choose the head explained.")
    start, stop = tasks.offsets[task], tasks.offsets[task + 1]
    return tasks.classes[task], slice(int(start), int(stop)), tasks.multilabel


def explain(outputs, source, target=None, *, task=None) -> np.ndarray:
    """Grad-CAM of a fitted classifier's :class:`~sktransfer._outputs.Outputs`
    on the images of ``source``; see ``TransferClassifier.explain``."""
    classes, logits, binary = _task_logits(outputs.encoder, task)
    n, size = len(source), outputs.feed.preprocess.size
    targets = None  # the predicted classes, found in the Grad-CAM pass itself
    if target is not None:
        labels = np.broadcast_to(np.asarray(target, dtype=object), (n,))
        known = classes.tolist()
        unknown = sorted({str(t) for t in labels if t not in set(known)})
        if unknown:
            where = "" if task is None else f"[{task}]"
            raise ValueError(f"target {unknown} is not among classes_{where} {known}.")
        targets = np.array([known.index(t) for t in labels])
    network, frozen, device = outputs.network, outputs.frozen, outputs.feed.device

    def cam(x, pos):
        t = None if targets is None else torch.as_tensor(targets[pos], device=device)
        if network.cut:
            with torch.no_grad():
                h = frozen(x)
            if h.ndim == 4:  # the map to explain is the frozen part's output or after it
                return grad_cam(network, h.float(), t, logits, binary,
                                start=network.cut, size=x.shape[-2:])
        # The last map lies inside the frozen units: the gradient must reach it there.
        return grad_cam(network, x, t, logits, binary)

    out = np.empty((n, size, size), dtype=np.float32)
    # torch.autograd.grad differentiates with respect to the feature map
    # only: no parameter's .grad is written, and the model is left as it was.
    for pos, (maps,) in outputs.feed.run(source, range(n), fn=cam, mode="grad"):
        out[pos] = maps.cpu().numpy()
    return out


def plot_explanations(X: ImageInput, heatmaps: np.ndarray, *, titles=None, n_cols: int = 4,
                      alpha: float = 0.45, cmap: str = "jet", axes=None):
    """Overlay heatmaps (e.g. from ``TransferClassifier.explain``) on their images.

    Parameters
    ----------
    X : images
        The explained images, in any accepted form.
    heatmaps : ndarray of shape (n_images, H, W)
        Values in [0, 1], one map per image, aligned with ``X``.
    titles : list of str, default=None
        One title per image.
    n_cols : int, default=4
        Images per row of the figure.
    alpha : float, default=0.45
        Opacity of the heatmap.
    cmap : str, default="jet"
        Colour map of the heatmap.
    axes : array of matplotlib Axes, default=None
        Where to draw; a new figure if None.

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import plot_explanations
    >>> images = np.zeros((2, 32, 32), dtype=np.uint8)
    >>> maps = np.random.default_rng(0).random((2, 32, 32))
    >>> fig = plot_explanations(images, maps, titles=["a", "b"])
    >>> len(fig.axes)
    2
    """
    from ._display import draw_images

    heatmaps = np.asarray(heatmaps)
    n = len(check_images(X))
    if heatmaps.ndim != 3 or len(heatmaps) != n:
        raise ValueError(f"heatmaps must have shape (n_images={n}, H, W); got "
                         f"{heatmaps.shape}.")
    axes = draw_images(X, titles=titles, heatmaps=heatmaps, n_cols=n_cols, axes=axes,
                       alpha=alpha, cmap=cmap)
    return axes[0].figure
