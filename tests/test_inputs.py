"""Every accepted input form, image modes, and bad inputs."""

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sktransfer import ImageError, PretrainedFeatureExtractor
from sktransfer._images import check_images, decode_bytes

from .conftest import TINY


@pytest.fixture
def fitted(images):
    X, _ = images
    return PretrainedFeatureExtractor(**TINY, precision="float32").fit(X)


def test_every_input_form_gives_the_same_features(fitted, images, png_files):
    X, _ = images
    paths, _ = png_files
    ref = fitted.transform(X)
    forms = {
        "str paths": paths,
        "pathlib paths": [Path(p) for p in paths],
        "tuple": tuple(paths),
        "object array": np.array(paths, dtype=object),
        "str array": np.array(paths),
        "series": pd.Series(paths),
        "one-column frame": pd.DataFrame({"image": paths}),
        "PIL images": [Image.open(p) for p in paths],
        "list of arrays": list(X),
        "float array": X.astype(np.float32) / 255,
        "float64 list": [x / 255.0 for x in X],
    }
    for name, form in forms.items():
        np.testing.assert_allclose(fitted.transform(form), ref, atol=1e-5, err_msg=name)


def test_grayscale_forms_agree(fitted, images):
    X, _ = images
    gray = X[..., 0]
    ref = fitted.transform(gray)
    np.testing.assert_allclose(fitted.transform(gray[..., None]), ref, atol=1e-6)
    np.testing.assert_allclose(fitted.transform(np.repeat(gray[..., None], 3, -1)), ref, atol=1e-5)
    np.testing.assert_allclose(fitted.transform([Image.fromarray(g) for g in gray]), ref, atol=1e-6)


def test_arrays_of_different_sizes(fitted, images):
    X, _ = images
    mixed = [X[0], X[1][:30, :20], np.zeros((64, 50), np.uint8)]
    out = fitted.transform(mixed)
    assert out.shape == (3, fitted.n_features_out_)
    np.testing.assert_allclose(out[0], fitted.transform(X[:1])[0], atol=1e-6)


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_modes_become_rgb_or_gray():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((20, 30), 128, np.uint8)])
    t = decode_bytes(_encode(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(t, rgb.transpose(2, 0, 1))
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 0
    assert decode_bytes(_encode(pal, "PNG")).shape == (3, 20, 30)
    cmyk = decode_bytes(_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"))
    assert cmyk.shape == (3, 20, 30) and cmyk.dtype == np.uint8
    la = decode_bytes(_encode(Image.fromarray(rgba[..., :2].copy(), "LA"), "PNG"))
    assert la.shape == (1, 20, 30)


def test_16_bit_images_are_scaled(fitted):
    g8 = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    g16 = g8.astype(np.uint16) * 257  # 255 -> 65535
    t = decode_bytes(_encode(Image.fromarray(g16), "PNG"))
    assert t.dtype == np.uint16 and int(t.max()) == int(g16.max())
    np.testing.assert_allclose(fitted.transform([g16]), fitted.transform([g8]), atol=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # bright left band
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    t = decode_bytes(_encode(im, fmt, exif=exif.tobytes()))
    assert t.shape[1:] == (40, 20)
    top = t[0, :10].mean()
    bottom = t[0, -10:].mean()
    assert top > 200 and bottom < 50  # the left band is now on top


def test_many_errors_are_listed_with_index_and_path(tmp_path, png_files):
    paths, _ = png_files
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(Path(paths[0]).read_bytes()[:100])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = str(tmp_path / "missing.png")
    X = [paths[0], missing, str(tmp_path), str(empty)]
    with pytest.raises(ImageError) as err:
        check_images(X)
    msg = str(err.value)
    assert "3 images could not be used" in msg
    assert f"X[1] {missing!r}: no such file" in msg
    assert "X[2]" in msg and "directory" in msg
    assert "X[3]" in msg and "empty" in msg
    est = PretrainedFeatureExtractor(**TINY).fit(paths)
    with pytest.raises(ImageError) as err:
        est.transform([paths[0], str(text), paths[1], str(trunc)])
    msg = str(err.value)
    assert "2 images" in msg and "X[1]" in msg and "notes.png" in msg
    assert "X[3]" in msg and "trunc.png" in msg


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (200, 200)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="decompression bomb"):
        PretrainedFeatureExtractor(**TINY).fit([str(p)]).transform([str(p)])


@pytest.mark.parametrize(
    "X, match",
    [
        ([], "empty"),
        (np.zeros((0, 8, 8)), "empty"),
        (np.zeros(5), "dimension"),
        (np.zeros((2, 3, 8, 8, 3)), "dimension"),
        (np.zeros((2, 8, 8, 2)), "2 channels"),
        (np.zeros((2, 10)), "not a perfect square"),
        (np.zeros((12, 0)), "0 columns"),
        (np.full((2, 8, 8), np.nan), "NaN"),
        (np.full((2, 8, 8), np.inf), "infinity"),
        (np.full((2, 8, 8), 3.0), r"\[0, 1\]"),
        (np.full((2, 8, 8), -1), "0, 255"),
        ([np.zeros((8, 8)), "x.png"], "X\\[1\\]"),
        ([np.zeros((8, 8)), 3], "X\\[1\\] int"),
    ],
)
def test_bad_arrays(X, match):
    with pytest.raises((ValueError, TypeError), match=match):
        check_images(X)


def test_single_path_and_sparse_are_type_errors(tmp_path):
    import scipy.sparse as sp

    with pytest.raises(TypeError, match="wrap it in a list"):
        check_images(str(tmp_path / "a.png"))
    with pytest.raises(TypeError, match="sparse"):
        check_images(sp.csr_matrix(np.eye(4)))


def test_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        check_images([str(fifo)])


def _palette_image(colours):
    """A 16 x 16 "P" image of indices 0 and 1 whose palette maps them to ``colours``."""
    image = Image.fromarray(np.tile(np.array([0, 1] * 8, dtype=np.uint8), (16, 1)), mode="P")
    image.putpalette([c for colour in colours for c in colour])
    return image


def test_palette_images_are_keyed_by_their_colours_too(tmp_path):
    """Two palette images with the same indices and other palettes are other images:
    under memory= each gets its own features (they once shared one stored entry)."""
    red_blue = _palette_image([(255, 0, 0), (0, 0, 255)])
    green = _palette_image([(0, 255, 0), (0, 128, 0)])
    source = check_images([red_blue, green, red_blue.copy()])
    assert source.content_key(0) != source.content_key(1)
    assert source.content_key(0) == source.content_key(2)
    plain = PretrainedFeatureExtractor(**TINY).fit([red_blue])
    stored = PretrainedFeatureExtractor(**TINY, memory=tmp_path).fit([red_blue])
    stored.transform([red_blue])
    np.testing.assert_array_equal(stored.transform([green]), plain.transform([green]))


def test_image_errors_and_warnings_pickle_with_their_problems():
    import pickle

    from sktransfer import ImageWarning

    error = ImageError([(3, "'a.png'", "no such file")])
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)
    warning = pickle.loads(pickle.dumps(ImageWarning("bad", error.problems)))
    assert warning.problems == error.problems and str(warning) == "bad"


def test_an_array_of_images_is_checked_in_place():
    """A float stack is validated a chunk of images at a time: no copy and no
    full-size temporary (the NaN and range checks once allocated one)."""
    import tracemalloc

    from sktransfer._images import check_images

    X = np.random.default_rng(0).random((150, 256, 256, 3), dtype=np.float32)  # 112 MiB
    tracemalloc.start()
    source = check_images(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 10 * 2**20, peak  # a full-size boolean temporary alone: 28 MiB
    assert source.items is X or np.shares_memory(source.items, X)
    X[7, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_images(X)
    X[7, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_images(X)
