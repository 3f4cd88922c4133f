"""What a fitted estimator computes, described for the code that runs it elsewhere.

``explain``, ``export_onnx`` (its check against the estimator) and
:mod:`sktransfer.dask` need to know what a fitted estimator computes: its
network and frozen part, how images reach it, the test-time views, and how
the network's outputs become features, probabilities or predictions. They
ask the estimator for it with its one internal method
``__sktransfer_outputs__()``, which returns an :class:`Outputs`, and never
read its private attributes; the estimators' own ``transform``, ``predict``
and ``predict_proba`` run the same description.

An :class:`Outputs` is a read-only view: changing what runs (the float32
reference of ``export_onnx``'s check) makes a new description
(:meth:`Outputs.float32`), never edits the estimator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import _device
from ._inference import Feed
from ._trunk import FrozenPart, as_top_input

#: What :attr:`Outputs.kind` may be.
KINDS = ("features", "classes", "targets")


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What a fitted sktransfer estimator computes, and how.

    Attributes
    ----------
    kind : {"features", "classes", "targets"}
        The extractor's features, a classifier's classes, or a regressor's
        targets.
    network : BackboneNetwork
        The fitted network (with its new head for the fine-tuned estimators).
    frozen : FrozenPart
        The frozen part as it runs (the extractor's whole network up to its
        ``layer``).
    feed : Feed
        How images reach the network (preprocessing, batches, threads, device).
    views : tuple of str
        Test-time views whose outputs are averaged (``FLIPS`` with ``tta``).
    top_dtype : torch.dtype
        The trained top's precision (the one it was trained at).
    encoder : Tasks, TargetScaler or None
        How the network's outputs become probabilities and labels, or
        targets in the units of ``y`` (``target_encoder_``); ``None`` for
        features.
    width : int
        Width of :meth:`raw`'s rows: features, or all logits.
    """

    kind: str
    network: object
    frozen: FrozenPart
    feed: Feed
    views: tuple = ("identity",)
    top_dtype: torch.dtype = torch.float32
    encoder: object = None
    width: int = 0

    @property
    def trunk(self):
        """The fixed frozen part (``None`` when nothing stayed fixed)."""
        return self.frozen.trunk

    def float32(self) -> Outputs:
        """The same model run by torch at float32, storing nothing."""
        return dataclasses.replace(self, frozen=self.frozen.float32(), top_dtype=torch.float32)

    def raw(self, source, indices=None) -> np.ndarray:
        """``(n, width)`` float32: features, or the network's logits
        averaged over :attr:`views`, for the images ``indices`` of ``source``.

        The frozen part's outputs (computed, or read from the trunk's store)
        feed the trained top, which runs at :attr:`top_dtype` either way: the
        same fitted model gives the same outputs with and without a store.
        """
        indices = np.arange(len(source)) if indices is None else np.asarray(indices)
        out = np.empty((len(indices), self.width), dtype=np.float32)
        if self.kind == "features":
            for pos, (feats,) in self.feed.run(source, indices, fn=lambda x, _: self.frozen(x)):
                out[pos] = feats.float().cpu().numpy()
            return out
        from ._network import TopNetwork

        top = TopNetwork(self.network)
        device = self.feed.device

        def run_top(x):
            with _device.autocast(device, self.top_dtype):
                return top(as_top_input(x).to(device)).float()

        if self.trunk is None:
            for pos, outputs in self.feed.run(source, indices, views=self.views,
                                              fn=lambda x, _: run_top(self.frozen(x))):
                out[pos] = torch.stack(outputs).mean(0).cpu().numpy()
            return out
        # Chunks of several batches: decoding runs ahead within a chunk, and
        # the trunk's outputs of one chunk are held at a time.
        size = self.feed.batch_size
        chunk = size * 8
        for start in range(0, len(indices), chunk):
            stop = min(len(indices), start + chunk)
            frozen = self.frozen.outputs(source, indices[start:stop], self.views, self.feed)
            with torch.inference_mode():
                for s in range(0, stop - start, size):
                    outputs = [run_top(view[s:s + size]) for view in frozen]
                    out[start + s:start + s + len(outputs[0])] = (
                        torch.stack(outputs).mean(0).cpu().numpy())
        return out
