"""The docstrings of the fine-tuned estimators, from shared numpydoc sections.

As skorch builds ``NeuralNetClassifier``'s docs from ``NeuralNet``'s
(``get_neural_net_clf_doc``): every parameter and attribute the two
estimators share is written once here, and :func:`docstring` puts each
estimator's own sections around them, in the order of its ``__init__``.
"""

from __future__ import annotations

#: Each parameter's numpydoc entry, as both estimators take it.
PARAMETERS = {
    "backbone": """\
    backbone : str, default="efficientnet_lite0"
        Name of the pretrained network, see :func:`sktransfer.list_backbones`.
""",
    "weights": """\
    weights : "DEFAULT", None or path, default="DEFAULT"
        As in :class:`PretrainedFeatureExtractor`; ``None`` trains from a
        random initialisation (no transfer).
""",
    "trainable_stages": """\
    trainable_stages : int, "all" or "gradual", default=1
        How many of the backbone's stages train (``stages_``: the backbone
        library's own, the same as the extractor's ``layer="stage<k>"``). An
        int k: the last k stages, what follows them (EfficientNet's
        ``conv_head``) and the new head; the stages before stay frozen. ``0``:
        the new head only. ``"all"``: everything. ``"gradual"``: the head in
        the first epoch, then one more stage per epoch, deepest first.
        Frozen parts keep ``requires_grad=False`` and stay in eval mode, so
        their BatchNorm statistics never change. For EfficientNet-Lite0 the
        last stage is ``blocks.5`` and ``blocks.6`` (after the stride-16
        feature map, see the user guide).
""",
    "image_size": """\
    image_size : int, "auto" or None, default="auto"
        Side of the square network input. ``None``: the backbone's (224 for
        EfficientNet-Lite0). ``"auto"``: the training images' own shorter
        side (median), kept between the backbone's size and 1.5 times it, so
        that larger images keep fine detail (ELPV's 300x300 cells: 300,
        which raised inner cross-validated accuracy from 87.2 % to 89.1 %,
        ``benchmarks/results/transfer_selection.md``) at up to 2.25 times
        the compute; smaller images are upsampled to the backbone's size; a
        backbone that only runs at its own size (a ViT) gets that. Images
        are resized whole with the backbone's own interpolation (no crop).
        The size used is ``image_size_``.
""",
    "augment": """\
    augment : bool, "flips" or callable, default="flips"
        Training-time augmentation: each epoch shows each image once, as one
        random view. ``"flips"``: one of its four horizontal/vertical flips.
        ``True``: random resized crop, horizontal flip, rotation up to 10
        degrees, brightness/contrast jitter. A callable maps a ``(3, H, W)``
        float tensor in [0, 1] to another. ``False``: the image itself. With
        ``"flips"`` or ``False`` and a fixed frozen part, the frozen part's
        output is computed once per image and view and reused every epoch
        (``frozen_precomputed_``); the training is the same, only faster.
""",
    "max_epochs": """\
    max_epochs : int, default=20
        Passes over the training images; each pass shows every image once.
        20 epochs of one random flip each are as much training as the 5
        epochs of all four flips that inner cross-validation chose on ELPV
        (``benchmarks/results/transfer_selection.md``).
""",
    "batch_size": """\
    batch_size : int, default=32
        Images per training and prediction batch.
""",
    "lr": """\
    lr : float, default=1e-3
        Peak learning rate of the head (one-cycle schedule, 15 % warm-up).
""",
    "backbone_lr_mult": """\
    backbone_lr_mult : float, default=1.0
        The trained backbone stages use ``lr * backbone_lr_mult``
        (discriminative learning rates).
""",
    "weight_decay": """\
    weight_decay : float, default=0.01
        AdamW weight decay.
""",
    "max_grad_norm": """\
    max_grad_norm : float, default=1.0
        Gradient-norm clipping.
""",
    "dropout": """\
    dropout : float, default=0.2
        Dropout before the new linear head.
""",
    "validation_fraction": """\
    validation_fraction : float or None, default=None
        Fraction of the training data held out for early stopping.
        ``None``: train on everything for ``max_epochs`` epochs, the whole
        one-cycle schedule. On ELPV that beat holding out 0.1 for early
        stopping in inner cross-validation (89.4 % against 89.1 %,
        ``benchmarks/results/transfer_selection.md``): a tenth more images,
        and no early stop on a noisy small validation set.
""",
    "patience": """\
    patience : int or None, default=5
        With ``validation_fraction`` set: epochs without a better validation
        score before stopping; the best epoch's weights are restored.
        ``None`` disables early stopping.
""",
    "class_weight": """\
    class_weight : dict, list of dict, "balanced" or None, default=None
        Weights of the classes in the loss, as in scikit-learn: a dict maps
        the labels of ``y`` (as given, e.g. strings) to weights. With a 2-D
        ``y``, as scikit-learn's forests: one dict per column, or
        ``"balanced"``; an image's weight is the product over its labelled
        columns.
""",
    "label_smoothing": """\
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy loss.
""",
    "device": """\
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        ``"auto"`` uses CUDA when it is available.
""",
    "precision": """\
    precision : {"auto", "float32", "bfloat16"}, default="auto"
        ``"auto"``: bf16 autocast where the hardware computes bf16 natively
        for inference (predictions, and the frozen part, with the same
        policy as :class:`PretrainedFeatureExtractor`: stem and first stage
        in float32) and, on CUDA, training; training steps on the CPU stay
        float32 (measured no faster in bf16). ``"bfloat16"`` forces bf16
        (inference still keeps the first stage in float32), ``"float32"``
        disables it.
""",
    "engine": """\
    engine : {"auto", "torch", "onnxruntime", "openvino"}, default="auto"
        What runs the frozen part of the network (before the first trained
        stage), in training and in :meth:`predict`: as in
        :class:`PretrainedFeatureExtractor` (ONNX Runtime at float32,
        OpenVINO at ``precision``, or torch), from a graph of the pretrained
        frozen units exported once per backbone, weights, cut point and size
        and reused by every fit of the process (a grid search exports it
        once) and, under ``memory``, across processes. The trained part
        always runs in torch. ``trainable_stages="all"`` or ``"gradual"``
        leave nothing fixed to export: torch. ``engine_`` says which ran.
""",
    "n_jobs": """\
    n_jobs : int or None, default=None
        Threads decoding image files (``-1``: one per CPU; ``None``: 1).
""",
    "memory": """\
    memory : str, path, joblib.Memory or None, default=None
        Directory keeping the frozen part's output per image and view, and
        the engine's graph of the frozen part. Entries are keyed by the
        image's content and by everything the output depends on (backbone,
        the frozen units' weights, cut point, input size, normalisation,
        engine, precision), so every later fit or prediction with the same
        settings reads them: a grid search over ``lr``, ``max_epochs``,
        ``dropout``, ``weight_decay`` or ``label_smoothing`` runs each
        image's frozen part once for the whole search, folds included, and
        a re-run after a failure runs it only for the images not yet done.
        Entries written under another version of sktransfer's storage
        format are never read.
        Used where the output is computed once per fit (``frozen_precomputed_``):
        ``augment=True`` or a callable, and ``trainable_stages="all"`` or
        ``"gradual"``, compute it per batch and bypass it. Written
        atomically, so processes may share the directory. Size per image and
        view: the frozen part's output (EfficientNet-Lite0, 300 px,
        ``trainable_stages=1``: 112 x 19 x 19 in bf16, 81 kB).
""",
    "tta": """\
    tta : bool or "auto", default=False
        Test-time augmentation: predictions average the outputs of the four
        flips of each image (four times the prediction cost). ``"auto"``:
        when ``augment="flips"``.
""",
    "task_weights": """\
    task_weights : array-like of shape (n_targets,) or None, default=None
        With several target columns (a 2-D ``y``): relative weights of the
        columns' losses, normalised to sum 1; the loss is their weighted
        mean (``None``: equal weights). Weighting is not masking: a weight
        of 0 trains nothing for that column. With one column it must be
        ``None`` or one weight (which changes nothing).
""",
    "warm_start": """\
    warm_start : bool, default=False
        If True, ``fit`` continues training the fitted network for
        ``max_epochs`` more epochs instead of starting again. It continues
        only what it can: the same number of target columns, labels the
        first fit knew (classifier), the same backbone and input size
        (``image_size="auto"`` keeps ``image_size_``); anything else is a
        ``ValueError`` naming what differs. It trains a copy of the
        network, so a continued fit that fails leaves the fitted one as it
        was.
""",
    "checkpoint_dir": """\
    checkpoint_dir : str, path or None, default=None
        If set, training is checkpointed there after every epoch (skorch's
        ``Checkpoint``: weights, optimizer state and history, plus the best
        epoch's weights). If a fit is interrupted (Ctrl-C, which re-raises
        ``KeyboardInterrupt``, or a killed process), fitting again with the
        same data and parameters resumes after the last completed epoch,
        with the same validation split, learning-rate schedule and early
        stopping state. A directory holding an unfinished fit of other data
        or parameters is refused; a finished fit's files are replaced. A
        parameter that cannot be fingerprinted (a lambda, an object whose
        repr is a memory address) is named in a warning when resuming.
""",
    "accelerator": """\
    accelerator : accelerate.Accelerator or None, default=None
        Train one model in several processes (devices, or machines), as
        skorch's ``AccelerateMixin`` does: run the same script in every
        process with ``accelerate launch`` or ``torchrun``
        (``Accelerator(cpu=True)`` for processes on CPUs). Every process
        draws the same order and views, trains on its share of each batch
        of ``batch_size`` images (gradients all-reduced: the step of the
        whole batch), computes its share of the frozen part's outputs, and
        ends with the same weights; validation scores and early stopping
        are decided over all processes; with ``checkpoint_dir`` (on a file
        system all processes share) the main process writes and every
        process resumes. Mixed precision of the training steps is the
        accelerator's (``mixed_precision="bf16"`` or ``"fp16"``, with loss
        scaling); ``precision`` still sets the frozen part and predictions.
        ``device`` must be ``"auto"``. The accelerator is not pickled with
        the fitted estimator, which loads and predicts in any process.
        A search or cross-validation over the estimator must use
        ``n_jobs=1``. See the scaling page of the docs.
""",
    "verbose": """\
    verbose : int, default=0
        If > 0, print skorch's per-epoch table (and a progress bar in a
        terminal).
""",
    "random_state": """\
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the head's initialisation, shuffling, augmentation
        and dropout: the same int gives identical predictions on CPU, and a
        fit resumed from ``checkpoint_dir`` continues the same draws. With
        an int, the global random generators of numpy, Python and torch are
        left as they were.
""",
}

#: Each shared fitted attribute's numpydoc entry.
ATTRIBUTES = {
    "model_": """\
    model_ : sktransfer._network.BackboneNetwork
        The fine-tuned network, in eval mode.
""",
    "history_": """\
    history_ : list of dict
        skorch's per-epoch history (losses, validation scores, timings).
""",
    "n_epochs_": """\
    n_epochs_ : int
        Epochs run.
""",
    "image_size_": """\
    image_size_ : int
        Side of the network input used (see ``image_size``).
""",
    "preprocess_": """\
    preprocess_ : dict
        Input size, normalisation and interpolation of the network input.
""",
    "frozen_precomputed_": """\
    frozen_precomputed_ : bool
        Whether the frozen part's output was computed once per image and
        view before training, and reused every epoch.
""",
    "resumed_from_epoch_": """\
    resumed_from_epoch_ : int
        Epochs taken from a checkpoint (0 when training started afresh).
""",
    "stages_": """\
    stages_ : list of str
        The backbone's stages (the modules that end them), shallowest first.
    device_, precision_ : torch.device, str
        Where it runs, and the frozen part's precision from the backbone's
        second stage on (``"float32"`` with ONNX Runtime); the trained top
        runs at its training precision.
""",
    "engine_": """\
    engine_ : str
        ``"openvino"``, ``"onnxruntime"`` or ``"torch"``: what runs the frozen part.
""",
    "trunk_": """\
    trunk_ : FrozenTrunk or None
        The frozen units as they run: engine, precision, cut point and the
        ``memory`` store of their outputs; ``None`` when nothing stays frozen
        (``trainable_stages="all"`` or ``"gradual"``). Decided in :meth:`fit`.
""",
    "weights_id_": """\
    weights_id_ : str
        SHA-256 of the backbone's initial weights.
""",
}

#: The classifier's own ``tta`` entry: its default, and why.
CLASSIFIER_TTA = """\
    tta : bool or "auto", default="auto"
        Test-time augmentation: predictions average the logits of the four
        flips of each image (four times the prediction cost). ``"auto"``:
        when ``augment="flips"``. On ELPV, the fourth round of inner
        cross-validation chose flip TTA with ``dropout=0.2``: the best mean
        inner accuracy of every setting and TTA tried
        (``benchmarks/results/transfer_selection.md``).
"""

#: The attribute of both that says how ``y`` becomes the network's targets.
TARGET_ENCODER = """\
    target_encoder_ : {}
        How ``y`` becomes the network's targets and its outputs become
        predictions ({}).
"""


def docstring(summary: str, parameters: list[str], own: dict, attributes: dict,
              sections: str) -> str:
    """A numpydoc docstring: ``summary`` (with its extended description),
    ``parameters`` in order (from :data:`PARAMETERS`, or ``own``'s entry of
    that name), the estimator's ``attributes`` then the shared
    :data:`ATTRIBUTES`, and the closing ``sections`` (See Also, Examples)."""
    entries = [own.get(name) or PARAMETERS[name] for name in parameters]
    attrs = list(attributes.values()) + list(ATTRIBUTES.values())
    return (summary.rstrip() + "\n\n    Parameters\n    ----------\n" + "".join(entries)
            + "\n    Attributes\n    ----------\n" + "".join(attrs) + "\n"
            + sections.strip("\n") + "\n    ")
