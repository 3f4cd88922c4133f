"""Hostile files, the on_error policy, fuzzed arrays, persistence across versions,
interrupted training and thread limits."""

import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.linear_model import LogisticRegression

import sktransfer
from sktransfer import (
    ImageError,
    ImageWarning,
    InconsistentVersionWarning,
    PretrainedFeatureExtractor,
    TransferClassifier,
    TransferRegressor,
)

from .conftest import TINY, interrupt_in_epoch, make_images

FAST = dict(TINY, max_epochs=3, batch_size=8)


# -- a corpus of broken and unusual files -------------------------------------


def _png_header_only(width, height):
    """A well-formed PNG declaring ``width x height`` with almost no pixel data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _corpus():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    png, jpeg = _save(rgb, "PNG"), _save(rgb, "JPEG")
    palette = rgb.convert("P", palette=Image.ADAPTIVE)
    palette.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    return {
        # name: (bytes, readable?)
        "truncated.png": (png[: len(png) // 2], False),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], False),
        "zero.png": (b"", False),
        "text.jpg": (b"this is a text file, not an image\n", False),
        "header_60000.png": (_png_header_only(60000, 60000), False),
        "gray16.tif": (_save(Image.fromarray(
            rng.integers(0, 65535, (40, 40), dtype=np.uint16)), "TIFF"), True),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG"), True),
        "palette_transparency.png": (_save(palette, "PNG"), True),
        "exif_rotated.jpg": (_save(rgb, "JPEG", exif=exif), True),
        "plain.png": (png, True),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    paths, readable = [], []
    for name, (data, ok) in _corpus().items():
        (root / name).write_bytes(data)
        paths.append(str(root / name))
        readable.append(ok)
    return paths, np.array(readable)


@pytest.fixture(scope="module")
def extractor():
    return PretrainedFeatureExtractor(**TINY).fit(np.zeros((2, 32, 32, 3), np.uint8))


def test_broken_files_raise_one_error_listing_each(corpus, extractor):
    paths, readable = corpus
    with pytest.raises(ImageError) as err:
        extractor.transform(paths)
    listed = {p[0] for p in err.value.problems}
    assert listed == set(np.flatnonzero(~readable))
    reasons = {os.path.basename(p[1].strip("'")): p[2] for p in err.value.problems}
    assert "decompression bomb" in reasons["header_60000.png"]  # refused from the header
    assert "empty" in reasons["zero.png"]


def test_on_error_nan_keeps_rows_aligned(corpus, extractor):
    paths, readable = corpus
    ext = PretrainedFeatureExtractor(**TINY, on_error="nan").fit(paths)
    with pytest.warns(ImageWarning, match="5 images could not be used") as rec:
        out = ext.transform(paths)
    assert out.shape == (len(paths), ext.n_features_out_)
    assert np.isnan(out[~readable]).all()
    assert np.isfinite(out[readable]).all()
    # the readable rows are exactly what the image alone gives
    good = list(np.array(paths)[readable])
    np.testing.assert_allclose(out[readable], extractor.transform(good), rtol=1e-5, atol=1e-6)
    assert "truncated.jpg" in str(rec[0].message)


def test_on_error_nan_in_a_pipeline_with_an_imputer(corpus):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    paths, readable = corpus
    y = np.arange(len(paths)) % 2
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY, on_error="nan"),
                         SimpleImputer(), LogisticRegression())
    with pytest.warns(ImageWarning):
        pipe.fit(paths, y)
        assert pipe.predict(paths).shape == (len(paths),)


def test_huge_jpeg_is_decoded_at_reduced_size(tmp_path):
    from sktransfer._images import decode_bytes

    big = Image.fromarray(np.full((2400, 3200, 3), 128, np.uint8))
    data = _save(big, "JPEG")
    t = decode_bytes(data, draft=224)
    assert t.shape[1] < 2400 / 4 and t.shape[2] < 3200 / 4  # DCT scaling, not full size


def test_truncated_files_never_hang(tmp_path, extractor):
    # Each prefix of a valid PNG either decodes or fails quickly.
    png = _save(Image.new("RGB", (30, 30), "red"), "PNG")
    paths = []
    for k in range(1, len(png), max(1, len(png) // 12)):
        p = tmp_path / f"prefix{k}.png"
        p.write_bytes(png[:k])
        paths.append(str(p))
    ext = PretrainedFeatureExtractor(**TINY, on_error="nan").fit(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        out = ext.transform(paths)
    assert out.shape[0] == len(paths)


# -- fuzzing --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_models():
    X, y = make_images(12, size=32)
    return [
            PretrainedFeatureExtractor(**TINY).fit(X),
            TransferClassifier(**FAST).fit(X, y),
            TransferRegressor(**FAST).fit(X, y.astype(float)),
        ]


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64,
                           np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=12),
    elements=None,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=arrays)
def test_fuzzed_arrays_work_or_raise_clearly(fitted_models, X):
    for model in fitted_models:
        method = model.transform if hasattr(model, "transform") else model.predict
        try:
            out = method(X)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            continue
        n = len(X) if X.ndim != 2 else X.shape[0]
        assert out.shape[0] == n  # never a silently wrong number of rows
        assert np.isfinite(out).all()


# -- persistence ----------------------------------------------------------------


@pytest.mark.parametrize("Est", [PretrainedFeatureExtractor, TransferClassifier])
def test_pickle_from_another_version_warns(Est, monkeypatch):
    X, y = make_images(12, size=32)
    params = TINY if Est is PretrainedFeatureExtractor else FAST
    for est in (Est(**params), Est(**params).fit(X, y)):
        monkeypatch.setattr(sktransfer, "__version__", "0.0.1")
        blob = pickle.dumps(est)
        monkeypatch.undo()
        with pytest.warns(InconsistentVersionWarning, match="0.0.1") as rec:
            pickle.loads(blob)
        assert rec[0].message.original_version == "0.0.1"
        with warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            pickle.loads(pickle.dumps(est))  # same version: silent


# -- interrupted training ---------------------------------------------------------


def test_keyboard_interrupt_then_resume(tmp_path, monkeypatch, capsys):
    X, y = make_images(24, size=32)
    params = dict(FAST, max_epochs=4, patience=None, validation_fraction=0.1,
                  checkpoint_dir=str(tmp_path / "ck"))
    interrupt_in_epoch(monkeypatch, 3)
    clf = TransferClassifier(**params)
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert "interrupted in epoch 3" in capsys.readouterr().err
    assert not hasattr(clf, "model_")  # the interrupted fit set nothing
    monkeypatch.undo()
    done = TransferClassifier(**params).fit(X, y)
    assert done.resumed_from_epoch_ == 2  # epochs 1-2 were checkpointed
    assert done.n_epochs_ == 4
    # A finished fit is not resumed again: the next fit starts afresh.
    again = TransferClassifier(**params).fit(X, y)
    assert again.resumed_from_epoch_ == 0
    # An unfinished fit of other data is refused, not mixed.
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        TransferClassifier(**params).fit(X, y)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unfinished fit of other data"):
        TransferClassifier(**params).fit(X[::-1], y[::-1])


def test_killed_process_resumes(tmp_path):
    X, y = make_images(24, size=32)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    ck = tmp_path / "ck"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from sktransfer import TransferClassifier
        from sktransfer._training import callbacks
        original = callbacks.valid_accuracy
        calls = []
        def killer(net, X, y):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(net, X, y)
        callbacks.valid_accuracy = killer
        d = np.load({str(tmp_path / 'data.npz')!r})
        TransferClassifier(**{dict(FAST, max_epochs=4, patience=None, validation_fraction=0.1,
                                   checkpoint_dir=str(ck))!r}
                           ).fit(d["X"], d["y"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    clf = TransferClassifier(**dict(FAST, max_epochs=4, patience=None, validation_fraction=0.1,
                                    checkpoint_dir=str(ck))).fit(X, y)
    assert clf.resumed_from_epoch_ == 2 and clf.n_epochs_ == 4


def test_resumed_early_stopping_restores_the_best_epoch(tmp_path, monkeypatch):
    X, y = make_images(24, size=32)
    params = dict(FAST, max_epochs=5, patience=3, validation_fraction=0.1,
                  checkpoint_dir=str(tmp_path / "ck"))
    interrupt_in_epoch(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        TransferClassifier(**params).fit(X, y)
    monkeypatch.undo()
    assert (tmp_path / "ck" / "best_params.pt").exists()
    clf = TransferClassifier(**params).fit(X, y)
    assert clf.resumed_from_epoch_ == 3
    accs = [r["valid_acc"] for r in clf.history_]
    assert len(accs) == clf.n_epochs_


# -- threads ----------------------------------------------------------------------


class ThreadRecordingLR(LogisticRegression):
    """A logistic regression that records torch's thread count where it is fitted."""

    def fit(self, X, y):
        self.torch_threads_ = torch.get_num_threads()
        return super().fit(X, y)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_parallel_grid_search_does_not_oversubscribe(n_jobs):
    """torch threads x workers <= cores under GridSearchCV(n_jobs=...)."""
    from sklearn.model_selection import GridSearchCV, cross_validate
    from sklearn.pipeline import make_pipeline

    X, y = make_images(12, size=32)
    pipe = make_pipeline(PretrainedFeatureExtractor(**TINY), ThreadRecordingLR())
    res = cross_validate(pipe, X, y, cv=2, n_jobs=n_jobs, return_estimator=True)
    cores = os.cpu_count() or 1
    for est in res["estimator"]:
        assert est[-1].torch_threads_ * min(n_jobs, cores) <= max(cores, n_jobs)
    grid = GridSearchCV(pipe, {"threadrecordinglr__C": [0.1, 1.0]}, cv=2, n_jobs=n_jobs)
    assert grid.fit(X, y).best_estimator_[-1].torch_threads_ >= 1


def test_a_resumed_float16_fit_continues_its_loss_scale(tmp_path, monkeypatch):
    """Where a GPU lacks bf16, training steps run in float16 with a loss
    scaler, whose scale drops when gradients overflow: a resumed fit goes on
    at the checkpointed scale, step for step as the uninterrupted fit does,
    and ends with its model. (torch computes float16 on the CPU too.)"""
    from sktransfer import _device
    from sktransfer._training.net import TransferNet

    def float16_steps(scales):
        monkeypatch.setattr(_device, "training_dtype", lambda precision, device: torch.float16)
        original = TransferNet.train_step

        def spy(self, batch, **fit_params):
            scales.append(self.grad_scaler_.get_scale())
            return original(self, batch, **fit_params)

        monkeypatch.setattr(TransferNet, "train_step", spy)

    X, y = make_images(24, size=32)
    params = dict(FAST, max_epochs=4, patience=None, validation_fraction=0.1, lr=0.05,
                  checkpoint_dir=str(tmp_path / "ck"))
    whole = []
    float16_steps(whole)
    uninterrupted = TransferClassifier(**{**params, "checkpoint_dir": None}).fit(X, y)
    per_epoch = len(whole) // 4
    assert whole[2 * per_epoch] < 2.0**16  # overflows lowered the scale by epoch 3
    monkeypatch.undo()
    float16_steps([])
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        TransferClassifier(**params).fit(X, y)
    monkeypatch.undo()
    after = []
    float16_steps(after)
    resumed = TransferClassifier(**params).fit(X, y)
    assert resumed.resumed_from_epoch_ == 2
    assert after == whole[2 * per_epoch:]
    np.testing.assert_array_equal(resumed.predict_proba(X), uninterrupted.predict_proba(X))
