"""The fine-tuning and inference core: one path per concern, and the bugs it had.

Each test named ``test_bug_*`` failed before the core was rewritten (issue
#12); the others check that the forward loop, the precision policy and the
training data pipeline each exist once.
"""

import random
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sktransfer import PretrainedFeatureExtractor, TransferClassifier, TransferRegressor

from .conftest import TINY, interrupt_in_epoch, make_images

FAST = dict(TINY, max_epochs=3, batch_size=8)
EXACT = dict(FAST, precision="float32", augment=False)


@pytest.fixture
def data():
    X, y = make_images(n=24, size=32)
    return X, y


# -- 1. class_weight is matched against the labels as given -------------------------


def test_bug_class_weight_dict_with_string_labels_shifts_predictions(data):
    X, y = data
    labels = np.where(y == 1, "crack", "ok")
    plain = TransferClassifier(**EXACT, lr=1e-2).fit(X, labels)
    weighted = TransferClassifier(**EXACT, lr=1e-2,
                                  class_weight={"ok": 1, "crack": 5}).fit(X, labels)
    crack = list(plain.classes_).index("crack")
    assert (weighted.predict_proba(X)[:, crack].mean()
            > plain.predict_proba(X)[:, crack].mean() + 0.05)


def test_bug_class_weight_dict_weights_the_named_label(data):
    """Labels {1, 2} with {1: 10} weight label 1, the same as sample weights would."""
    X, y = data
    labels = y + 1
    by_class = TransferClassifier(**EXACT, class_weight={1: 10}).fit(X, labels)
    by_sample = TransferClassifier(**EXACT).fit(
        X, labels, sample_weight=np.where(labels == 1, 10.0, 1.0))
    np.testing.assert_allclose(by_class.predict_proba(X), by_sample.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    wrong = TransferClassifier(**EXACT).fit(
        X, labels, sample_weight=np.where(labels == 2, 10.0, 1.0))
    assert not np.allclose(by_class.predict_proba(X), wrong.predict_proba(X), atol=1e-4)


# -- 2. backbones with a fixed input size fine-tune ---------------------------------------


@pytest.mark.parametrize("trainable_stages", [0, "all"])
def test_bug_fixed_input_size_backbone_fine_tunes(trainable_stages):
    X, y = make_images(n=8, size=32)  # timm's vit_tiny_patch16_224 takes 224x224 only
    vit = dict(backbone="timm/vit_tiny_patch16_224", weights=None, max_epochs=1,
               batch_size=8, random_state=0)
    clf = TransferClassifier(**vit, trainable_stages=trainable_stages).fit(X, y)
    assert clf.image_size_ == 224
    assert clf.predict_proba(X).shape == (len(X), 2)
    if trainable_stages == 0:
        with pytest.raises(ValueError, match="cannot run on 64x64 inputs.*image_size=None or 224"):
            TransferClassifier(**vit, image_size=64).fit(X, y)
        with pytest.raises(ValueError, match="cannot be cut between its stages"):
            TransferClassifier(**vit, trainable_stages=1).fit(X, y)


@pytest.mark.parametrize("name", ["torchvision/vit_b_16", "torchvision/inception_v3"])
def test_bug_torchvision_fixed_size_backbones_fine_tune(name):
    X, y = make_images(n=4, size=64)
    for trainable_stages in (0, "all"):
        clf = TransferClassifier(backbone=name, weights=None, max_epochs=1, batch_size=4,
                                 trainable_stages=trainable_stages, precision="float32",
                                 random_state=0).fit(X, y)
        assert clf.predict_proba(X).shape == (4, 2)


# -- 3. sample weights mean what they mean in scikit-learn --------------------------------


def test_bug_zero_sample_weight_is_the_same_as_leaving_the_image_out(data):
    X, y = data
    weight = np.ones(len(y))
    weight[:10] = 0  # per-batch normalisation made batches of zero weights NaN
    params = dict(EXACT, trainable_stages=0, max_epochs=4)
    weighted = TransferClassifier(**params).fit(X, y, sample_weight=weight)
    dropped = TransferClassifier(**params).fit(X[10:], y[10:])
    np.testing.assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(row["train_loss"]) for row in weighted.history_)


def test_scaling_every_weight_changes_nothing(data):
    X, y = data
    plain = TransferClassifier(**EXACT).fit(X, y)
    scaled = TransferClassifier(**EXACT).fit(X, y, sample_weight=np.full(len(y), 7.0))
    np.testing.assert_allclose(plain.predict_proba(X), scaled.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
    reg = TransferRegressor(**EXACT).fit(X, y.astype(float), sample_weight=np.arange(24.0))
    np.testing.assert_allclose(reg.y_mean_, np.average(y, weights=np.arange(24.0)))
    with pytest.raises(ValueError, match="at least one non-zero"):
        TransferClassifier(**EXACT).fit(X, y, sample_weight=np.zeros(len(y)))
    with pytest.raises(ValueError, match="[Nn]egative"):
        TransferClassifier(**EXACT).fit(X, y, sample_weight=-np.ones(len(y)))


# -- 4. resuming with parameters whose repr holds an address -----------------------------


def flip_up_down(image):
    """A module-level augmentation: fingerprinted by its qualified name."""
    return image.flip(-2)


@pytest.mark.parametrize("augment, warns", [(flip_up_down, False),
                                            (lambda image: image.flip(-1), True)])
def test_bug_resume_with_a_callable_augment_and_a_random_state_instance(
        tmp_path, monkeypatch, data, augment, warns):
    X, y = data

    def params():
        return dict(FAST, max_epochs=3, patience=None, validation_fraction=0.25,
                    augment=augment, random_state=np.random.RandomState(0),
                    checkpoint_dir=str(tmp_path / "ck"))

    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        TransferClassifier(**params()).fit(X, y)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        clf = TransferClassifier(**params()).fit(X, y)
    assert clf.resumed_from_epoch_ == 1 and clf.n_epochs_ == 3
    named = [w for w in rec if "could not be fingerprinted" in str(w.message)]
    assert bool(named) == warns
    if warns:
        assert "['augment']" in str(named[0].message)


def test_fingerprints_describe_values_without_addresses():
    from sktransfer._training.checkpoint import stable_value

    assert stable_value(flip_up_down) == ("tests.test_core.flip_up_down", True)
    assert stable_value(np.random.RandomState(3))[1]
    assert stable_value(torch.device("cpu")) == ("cpu", True)
    assert not stable_value(object())[1]
    assert not stable_value(lambda x: x)[1]
    assert stable_value({"a": [1, 2.5, None]}) == ({"a": [1, 2.5, None]}, True)


# -- 5. no global random generator is reseeded or left changed ----------------------------


@pytest.fixture
def no_global_reseeding(monkeypatch):
    """Fail on any call that reseeds torch's global generators (torch.manual_seed
    reseeds every CUDA device too). Restoring a saved state is checked by
    comparing the states before and after."""
    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} was called")
        return call

    for name in ("manual_seed", "seed"):
        monkeypatch.setattr(torch, name, refuse(f"torch.{name}"))
    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all"):
        monkeypatch.setattr(torch.cuda, name, refuse(f"torch.cuda.{name}"))


def _global_states():
    states = {"numpy": np.random.get_state(), "random": random.getstate(),
              "torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        states["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return states


def _assert_same(before, after):
    for a, b in zip(before["numpy"], after["numpy"]):  # key array and position
        np.testing.assert_array_equal(a, b)
    assert before["random"] == after["random"]
    assert torch.equal(before["torch"], after["torch"])
    for a, b in zip(before.get("cuda", []), after.get("cuda", [])):
        assert torch.equal(a, b)


@pytest.mark.parametrize("augment", ["flips", True])
def test_bug_fit_and_predict_leave_global_generators_alone(data, no_global_reseeding,
                                                           augment):
    X, y = data
    before = _global_states()
    clf = TransferClassifier(**FAST, augment=augment, dropout=0.5,
                             validation_fraction=0.25).fit(X, y)
    clf.predict_proba(X)
    TransferRegressor(**FAST).fit(X, y.astype(float)).predict(X)
    ext = PretrainedFeatureExtractor(**TINY).fit(X)
    ext.transform(X)
    _assert_same(before, _global_states())
    # ...and the fits are reproducible all the same
    again = TransferClassifier(**FAST, augment=augment, dropout=0.5,
                               validation_fraction=0.25).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_bug_compare_leaves_global_generators_alone(data, no_global_reseeding, monkeypatch):
    from sktransfer import compare
    from sktransfer._compare import _models

    X, y = data
    # the transfer models on the tiny backbone, so that they run in a second
    monkeypatch.setitem(_models.FINE_TUNE_PARAMS, "max_epochs", 1)
    for name in ("backbone", "weights"):
        monkeypatch.setitem(_models.FINE_TUNE_PARAMS, name, TINY[name])
    before = _global_states()
    compare(X, y, models=["random_forest", "small_cnn", "fine_tuned"], cv=2,
            train_sizes=[1.0], random_state=0, image_size=32, verbose=False)
    _assert_same(before, _global_states())


# -- 6. EXIF orientation: one rule for every input form ------------------------------------


def test_bug_exif_orientation_is_the_same_for_paths_and_pil_images(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a bright band on the left, on top once rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, "JPEG", exif=exif.tobytes())
    ext = PretrainedFeatureExtractor(**TINY, precision="float32").fit([str(path)])
    from_path = ext.transform([str(path)])
    from_pil = ext.transform([Image.open(path)])
    np.testing.assert_allclose(from_path, from_pil, atol=1e-6)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_allclose(from_path, ext.transform([upright]), atol=1e-6)
    unrotated = np.asarray(Image.open(path))
    assert not np.allclose(from_path, ext.transform([unrotated]), atol=1e-3)


# -- 7. interpolation, mean and std follow each backbone's own configuration -------------


def test_bug_interpolation_follows_the_backbone_config():
    import timm
    import torch.nn.functional as F
    from timm.data import resolve_model_data_config

    from sktransfer._backbones import load_backbone
    from sktransfer._inputs import Preprocess

    for name, arch in [("timm/test_resnet", "test_resnet"),
                       ("timm/test_efficientnet", "test_efficientnet")]:
        backbone = load_backbone(name, None)
        cfg = resolve_model_data_config(timm.create_model(arch))
        assert backbone.interpolation == cfg["interpolation"]
        assert backbone.mean == tuple(cfg["mean"]) and backbone.std == tuple(cfg["std"])
    assert load_backbone("timm/test_resnet", None).interpolation == "bilinear"
    tv = load_backbone("torchvision/resnet18", None)
    assert tv.interpolation == "bilinear" and tv.input_size == 224
    # bilinear really is bilinear (antialiased, as PIL and timm resize)
    image = torch.rand(3, 40, 50)
    got = Preprocess(32, (0, 0, 0), (1, 1, 1), "bilinear").resize([image])
    want = F.interpolate(image[None], size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False)
    torch.testing.assert_close(got, want)
    nearest = Preprocess(20, (0, 0, 0), (1, 1, 1), "nearest").resize([image])
    assert set(nearest.unique().tolist()) <= set(image.unique().tolist())
    with pytest.raises(ValueError, match="interpolation 'lanczos' is not supported"):
        Preprocess(32, (0, 0, 0), (1, 1, 1), "lanczos")
    ext = PretrainedFeatureExtractor(backbone="timm/test_resnet", weights=None,
                                     image_size=32).fit(np.zeros((2, 32, 32), np.uint8))
    assert ext.preprocess_["interpolation"] == "bilinear"


# -- one inference path, one precision policy -----------------------------------------------


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_extractor_stage_features_are_the_frozen_part_of_a_fine_tuned_model(data, precision):
    """layer="stage<k>" of the extractor = the pooled output of a TransferClassifier's
    frozen part when the stages after k train: same stages, same numerics."""
    from sktransfer._images import check_images

    X, y = data
    clf = TransferClassifier(**FAST, precision=precision, trainable_stages=2).fit(X, y)
    k = len(clf.stages_) - 2
    ext = PretrainedFeatureExtractor(**TINY, precision=precision, layer=f"stage{k}").fit(X)
    features = ext.transform(X)
    outputs = clf.__sktransfer_outputs__()
    net = outputs.network
    assert net.cut == net.stage_ends()[k - 1]
    assert outputs.trunk.cut == net.cut and not outputs.trunk.pool
    trunk = np.empty_like(features)
    for pos, (out,) in outputs.feed.run(check_images(X), range(len(X)),
                                        fn=lambda x, _: outputs.frozen(x)):
        trunk[pos] = out.float().mean(dim=(2, 3)).cpu().numpy()
    np.testing.assert_allclose(trunk, features, rtol=1e-5, atol=1e-5)


def test_a_gradual_fit_predicts_with_its_frozen_units_as_they_trained(data, monkeypatch):
    """On a CPU with native bf16, precision="auto" runs the frozen units in
    bf16 (from the second stage on) and trains the top in float32. A gradual
    fit that ends with units still frozen predicts the same way: the units
    before the cut point in bf16, the rest in float32."""
    from sktransfer import _device
    from sktransfer._network import BackboneNetwork

    monkeypatch.setattr(_device, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    calls = []
    original = BackboneNetwork.forward_units

    def spy(self, x, start=0, stop=None, dtype=torch.float32):
        calls.append((start, stop, dtype))
        return original(self, x, start, stop, dtype)

    monkeypatch.setattr(BackboneNetwork, "forward_units", spy)
    X, y = data
    clf = TransferClassifier(**dict(FAST, max_epochs=2), trainable_stages="gradual").fit(X, y)
    cut = clf.model_.cut
    assert clf.trunk_ is None and clf.precision_ == "bfloat16" and cut > 0
    assert (0, cut, torch.bfloat16) in calls and (cut, None, torch.float32) in calls
    calls.clear()
    clf.predict_proba(X)
    assert set(calls) == {(0, cut, torch.bfloat16), (cut, None, torch.float32)}


def test_one_precision_policy_for_features_and_predictions(data):
    """Under bf16, the stem and first stage run in float32 in every pass."""
    X, y = data
    dtypes = {}
    clf = TransferClassifier(**FAST, precision="bfloat16").fit(X, y)
    ext = PretrainedFeatureExtractor(**TINY, precision="bfloat16").fit(X)
    for est, call in [(ext, ext.transform), (clf, clf.predict_proba)]:
        for name in ("conv_stem", est.stages_[0], est.stages_[1]):
            est.model_.backbone.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name, est=est: dtypes.__setitem__(
                    (type(est).__name__, name), o.dtype))
        call(X[:4])
        assert dtypes[(type(est).__name__, "conv_stem")] == torch.float32
        assert dtypes[(type(est).__name__, est.stages_[0])] == torch.float32
        assert dtypes[(type(est).__name__, est.stages_[1])] == torch.bfloat16


# -- one training data pipeline --------------------------------------------------------------


@pytest.mark.parametrize("augment, precision, trainable_stages", [
    ("flips", "float32", 1), (False, "float32", 1),
    ("flips", "bfloat16", 1),  # the frozen part ends after the switch to bf16
    ("flips", "bfloat16", 4),  # ... before it: its output is float32
])
def test_cached_and_uncached_frozen_part_train_the_same(data, monkeypatch, augment,
                                                        precision, trainable_stages):
    """max_epochs means the same whether or not the frozen part's output is cached:
    the same draws of order and views, the same numbers."""
    from sktransfer import _training

    X, y = data
    params = dict(FAST, precision=precision, augment=augment,
                  trainable_stages=trainable_stages)
    cached = TransferClassifier(**params).fit(X, y)
    monkeypatch.setattr(_training, "PRECOMPUTE_FROZEN_OUTPUTS", False)
    uncached = TransferClassifier(**params).fit(X, y)
    assert cached.frozen_precomputed_ and not uncached.frozen_precomputed_
    assert [r["train_batch_count"] for r in cached.history_] == [3, 3, 3]  # 24 images / 8
    tol = 1e-5 if precision == "float32" else 2e-3
    np.testing.assert_allclose(cached.predict_proba(X), uncached.predict_proba(X),
                               rtol=10 * tol, atol=tol)


def test_training_decodes_files_in_n_jobs_threads(png_files, monkeypatch):
    """The uncached pipeline decodes in the inference path's thread pool."""
    import concurrent.futures

    from sktransfer import _inputs

    paths, y = png_files
    workers = []
    original = concurrent.futures.ThreadPoolExecutor

    def recording(max_workers=None, **kwargs):
        workers.append(max_workers)
        return original(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(_inputs, "ThreadPoolExecutor", recording)
    TransferClassifier(**dict(FAST, max_epochs=1), augment=True, n_jobs=2).fit(paths, y)
    assert workers and set(workers) == {2}


# -- compare is its own subpackage, imported lazily -------------------------------------


def test_import_sktransfer_loads_neither_compare_nor_pandas_nor_matplotlib():
    script = textwrap.dedent("""
        import sys
        sys.modules["pandas"] = None  # as if pandas were not installed
        import sktransfer
        loaded = [m for m in ("sktransfer._compare", "matplotlib", "skimage", "skorch")
                  if m in sys.modules]
        assert not loaded, loaded
        del sys.modules["pandas"]
        assert callable(sktransfer.compare) and "sktransfer._compare" in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]




# -- resuming continues the same fit; a failed fit leaves nothing half-fitted ------------


@pytest.mark.parametrize("patience", [None, 2])
def test_resumed_fit_is_the_uninterrupted_fit(tmp_path, monkeypatch, data, patience):
    """Order, views, dropout and the schedule continue where they stopped;
    with early stopping, the restored best epoch is the same too."""
    X, y = data
    params = dict(FAST, max_epochs=6, precision="float32", dropout=0.5, lr=1e-2,
                  validation_fraction=0.25, patience=patience)
    whole = TransferClassifier(**params).fit(X, y)
    assert whole.n_epochs_ >= 3
    params["checkpoint_dir"] = str(tmp_path / "ck")
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        TransferClassifier(**params).fit(X, y)
    monkeypatch.undo()
    resumed = TransferClassifier(**params).fit(X, y)
    assert resumed.resumed_from_epoch_ == 2
    assert [r["valid_acc"] for r in resumed.history_] == [
        r["valid_acc"] for r in whole.history_]
    np.testing.assert_allclose(resumed.predict_proba(X), whole.predict_proba(X),
                               rtol=1e-5, atol=1e-6)


def test_after_a_nan_loss_a_new_fit_starts_afresh(tmp_path, data, monkeypatch):
    from sktransfer import _network

    X, y = data
    params = dict(FAST, augment=False, checkpoint_dir=str(tmp_path / "ck"))
    original = _network.TopNetwork.forward
    monkeypatch.setattr(_network.TopNetwork, "forward",
                        lambda self, x: original(self, x) * float("nan"))
    with pytest.raises(FloatingPointError):
        TransferClassifier(**params).fit(X, y)
    monkeypatch.undo()
    clf = TransferClassifier(**dict(params, lr=1e-4)).fit(X, y)  # not refused
    assert clf.resumed_from_epoch_ == 0 and clf.n_epochs_ == 3
