"""One place that turns any accepted ``X`` into decoded images (PIL and numpy, no torch).

Accepted forms of ``X``:

- a list, tuple, 1-D array or pandas Series of file paths (``str`` or
  ``pathlib.Path``), of PIL images or of numpy arrays (sizes may differ);
- a pandas DataFrame with one column holding any of the above (an image
  column inside a ColumnTransformer);
- a numpy array ``(n, H, W)`` or ``(n, H, W, C)`` with ``C`` in {1, 3, 4};
- a 2-D numeric array ``(n, d)`` whose rows are flattened square grayscale
  images (``d`` a perfect square, e.g. ``load_digits().data``).

Pixel values: ``uint8`` (0-255), ``uint16`` (0-65535), other integer types
holding 0-255, or floats in [0, 1]. Grayscale is expanded to 3 channels,
alpha is dropped, palette/CMYK/LAB images become RGB, 16-bit images are
scaled, EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

_MAX_LISTED = 20


#: What every estimator takes as ``X``: paths, PIL images, arrays, or a
#: one-column DataFrame / Series of them (see the user guide).
ImageInput = Any

#: Labels or targets.
ArrayLike = Any


class ImageError(ValueError):
    """Raised for inputs that cannot be read as images.

    Lists every offending item with its index, the item (a path, say) and the
    reason, so a whole folder can be fixed in one go.

    Attributes
    ----------
    problems : list of (int, str, str)
        ``(index, item, reason)`` for each bad item.
    """

    def __init__(self, problems, what="image"):
        self.problems = list(problems)
        self.what = what
        n = len(self.problems)
        lines = [f"{n} {what}{'s' if n != 1 else ''} could not be used:"]
        for index, item, reason in self.problems[:_MAX_LISTED]:
            lines.append(f"  X[{index}] {item}: {reason}")
        if n > _MAX_LISTED:
            lines.append(f"  ... and {n - _MAX_LISTED} more.")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # pickled across processes (a Dask worker's error)
        return type(self), (self.problems, self.what)


class ImageWarning(UserWarning):
    """Warns of images left out or replaced (``on_error="nan"``).

    Attributes
    ----------
    problems : list of (int, str, str)
        ``(index, item, reason)`` for each bad item, as in :class:`ImageError`.
    """

    def __init__(self, message="", problems=()):
        super().__init__(message)
        self.problems = list(problems)

    def __reduce__(self):
        return type(self), (str(self), self.problems)


def _short(item) -> str:
    if isinstance(item, (str, os.PathLike)):
        return repr(str(os.fspath(item)))  # str(): a numpy string's repr names its type
    if isinstance(item, _BadItem):
        return _short(item.item)
    if isinstance(item, np.ndarray):
        return f"array{item.shape}"
    if isinstance(item, Image.Image):
        return f"PIL image {item.mode} {item.size}"
    return type(item).__name__


# --------------------------------------------------------------------------
# Validation: X -> ImageSource


class ImageSource:
    """A validated, indexable view of ``X``: one image per sample.

    Nothing is decoded here; :meth:`load` decodes one item on demand so that
    memory stays bounded by the batch size.
    """

    def __init__(self, items):
        self.items = items  # list of path | PIL image | ndarray, or an ndarray stack

    def __len__(self):
        return len(self.items)

    def load(self, i: int, draft: int | None = None) -> np.ndarray:
        """Decode item ``i`` as a ``(C, H, W)`` array, C in {1, 3}: uint8,
        uint16 or float32 in [0, 1]."""
        item = self.items[i]
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                data = f.read()
            return decode_bytes(data, draft)
        if isinstance(item, Image.Image):
            return _pil_to_chw(upright(item))
        if isinstance(item, _BadItem):
            raise ValueError(item.reason)
        return _array_to_chw(item)

    def try_load(self, i: int, draft: int | None = None):
        """``(image, None)`` as :meth:`load` decodes it, or ``(None, (i, item, reason))``."""
        try:
            return self.load(i, draft), None
        except (ValueError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else f"cannot be read ({exc})"
            return None, (i, _short(self.items[i]), reason)

    def shorter_side(self, i: int) -> int | None:
        """Shorter side of item ``i`` in pixels, read from the file header
        only; ``None`` if it cannot be read (decoding will report why)."""
        item = self.items[i]
        if isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as im:
                    return min(im.size)
            except Exception:  # unreadable: decoding reports it with the reason
                return None
        if isinstance(item, Image.Image):
            return min(item.size)
        if isinstance(item, _BadItem):
            return None
        return min(np.shape(item)[:2])

    def content_key(self, i: int) -> str:
        """SHA-256 of the image content (not its name): the image's key in stores."""
        item = self.items[i]
        if isinstance(item, (str, os.PathLike)):
            return _file_digest(os.fspath(item))
        h = hashlib.sha256()
        if isinstance(item, Image.Image):
            item = upright(item)  # the pixels the network sees
            h.update(f"pil:{item.mode}:{item.size}".encode())
            h.update(item.tobytes())
            if item.mode in ("P", "PA"):
                # the bytes are palette indices: the colours are in the palette
                palette = item.getpalette(rawmode="RGB") or []
                h.update(f":palette:{len(palette)}:".encode())
                h.update(bytes(palette))
        else:
            arr = np.ascontiguousarray(item)
            h.update(f"array:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()


def _file_digest(path: str) -> str:
    # Re-hashing a file whose size, mtime and inode did not change is wasted
    # work when a grid search transforms the same paths fifty times.
    from ._process_cache import cache

    st = os.stat(path)
    memo_key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)

    def digest():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            h.update(f.read())
        return h.hexdigest()

    return cache("digests").get_or_put(memo_key, digest, lambda d: len(d) + len(memo_key[0]))


def check_images(X, skipped=None) -> ImageSource:
    """Validate ``X`` and wrap it as an :class:`ImageSource`.

    Cheap checks happen here for every item at once (existence of files,
    array shapes, NaN/inf, value ranges) so that a bad item is reported
    before any expensive work starts. Bad items raise one
    :class:`ImageError`, unless ``skipped`` is a list: then
    ``(index, item, reason)`` of each is appended to it, and loading that
    item raises ``ValueError`` with the same reason.
    """
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] == 1 and X.dtypes.iloc[0].kind not in "biuf":
            X = list(X.iloc[:, 0])  # an image column: paths, PIL images, arrays
        else:
            X = X.to_numpy()
    elif hasattr(X, "iloc"):  # pandas Series
        X = list(X)
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            "A sparse matrix was passed, but images are expected: pass file "
            "paths, PIL images or dense arrays (n_samples, height, width[, channels])."
        )
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise TypeError(
            "X must be a collection of images (e.g. a list of paths), not a "
            f"single {type(X).__name__}; wrap it in a list."
        )
    if not isinstance(X, (np.ndarray, list, tuple)) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.dtype.kind not in "OUS":
        return _check_array_stack(X)
    if isinstance(X, np.ndarray):
        X = list(X.ravel()) if X.ndim == 2 and X.shape[1] == 1 else list(X)
    if not isinstance(X, (list, tuple)):
        try:
            X = list(X)
        except TypeError:
            raise TypeError(
                "X must be a list of image paths, PIL images or arrays, or an "
                f"array of images; got {type(X).__name__}."
            ) from None
    if len(X) == 0:
        raise ValueError("X is empty: at least one image is required.")
    if all(isinstance(x, (list, tuple)) for x in X):
        # Nested lists of numbers, e.g. a 2-D array written as lists.
        try:
            arr = np.asarray(X)
        except ValueError:
            arr = None
        if arr is not None and arr.dtype != object:
            return _check_array_stack(arr)
    items, problems = [], []
    for i, x in enumerate(X):
        try:
            items.append(_check_item(x))
        except (ValueError, TypeError) as exc:
            problems.append((i, _short(x), str(exc)))
            items.append(_BadItem(str(exc), x))
    if problems and skipped is None:
        raise ImageError(problems)
    if skipped is not None:
        skipped.extend(problems)
    return ImageSource(items)


class _BadItem:
    """Stands for an item that failed validation, when bad items are skipped."""

    def __init__(self, reason, item):
        self.reason = reason
        self.item = item


def _check_item(x):
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ValueError("no such file") from None
        except OSError as exc:
            raise ValueError(f"cannot access the file ({exc.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise ValueError("is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file (a FIFO or device?)")
        if st.st_size == 0:
            raise ValueError("the file is empty")
        return path
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        _check_pixels(arr[None] if arr.ndim in (2, 3) else arr, single=True)
        return arr
    raise TypeError(
        f"{type(x).__name__} is not an image: expected a file path, a PIL image "
        "or a numpy array"
    )


def _check_array_stack(X: np.ndarray) -> ImageSource:
    if X.ndim == 2 and X.shape[0] > 0:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1] or X.shape[1] == 0:
            raise ValueError(
                f"X is a 2-D array with {X.shape[1]} columns; 2-D rows are read "
                "as flattened square grayscale images (e.g. 64 = 8x8), and "
                f"{X.shape[1]} is not a perfect square. Reshape X to "
                "(n_samples, height, width) or (n_samples, height, width, channels)."
            )
        X = X.reshape(X.shape[0], side, side)
    if X.ndim not in (3, 4):
        raise ValueError(
            f"X has {X.ndim} dimension(s) (shape {X.shape}); expected "
            "(n_samples, height, width), (n_samples, height, width, channels), "
            "a 2-D array of flattened square images, or a list of paths/images."
        )
    if X.shape[0] == 0:
        raise ValueError("X is empty: at least one image is required.")
    _check_pixels(X, single=False)
    return ImageSource(X)


def _check_pixels(X: np.ndarray, single: bool) -> None:
    """Check shape, dtype and values of a stack ``(n, H, W[, C])``."""
    where = "" if single else " of X"
    if X.ndim not in (3, 4):  # only reachable for a single item
        raise ValueError(
            f"array of shape {X.shape} is not an image: expected (height, width) "
            "or (height, width, channels)"
        )
    if X.ndim == 4 and X.shape[3] not in (1, 3, 4):
        raise ValueError(
            f"images{where} have {X.shape[3]} channels; expected 1 (grayscale), "
            "3 (RGB) or 4 (RGBA) in the last axis"
        )
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"images{where} have an empty side: shape {X.shape[1:]}")
    kind = X.dtype.kind
    if kind == "b":
        return
    if kind == "c":
        raise ValueError("Complex data not supported: pixels must be real numbers")
    if kind not in "uif":
        raise TypeError(f"pixel dtype {X.dtype} is not numeric")
    if kind == "f":
        # per image, a chunk of images at a time: the array is read in place,
        # never copied or converted whole
        finite, lo, hi = _per_image(X, lambda c: np.isfinite(c).all(axis=1),
                                    lambda c: c.min(axis=1), lambda c: c.max(axis=1))
        if not finite.all():
            if single:
                raise ValueError("contains NaN or infinity")
            bad = np.flatnonzero(~finite)
            raise ImageError([(int(i), "array", "contains NaN or infinity") for i in bad])
        out = (lo < 0) | (hi > 1)
        if out.any():
            msg = (
                "float pixels must lie in [0, 1] (got min {:.4g}, max {:.4g}); "
                "scale them, e.g. X / 255 for 8-bit data"
            )
            if single:
                raise ValueError(msg.format(lo[0], hi[0]))
            raise ImageError(
                [(int(i), "array", msg.format(lo[i], hi[i])) for i in np.flatnonzero(out)]
            )
    elif X.dtype not in (np.uint8, np.uint16):
        lo, hi = X.min(), X.max()
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer pixels{where} must be uint8, uint16 or lie in [0, 255] "
                f"(got {X.dtype} with min {lo}, max {hi})"
            )


#: Bytes of pixels :func:`_per_image` looks at at once.
CHUNK_BYTES = 16 << 20


def _per_image(X: np.ndarray, *reductions):
    """Each of ``reductions`` (of a ``(k, pixels)`` chunk, one value per image)
    over every image of ``X``, reading ``CHUNK_BYTES`` of it at a time."""
    per_image = max(1, X[0].nbytes)
    step = max(1, CHUNK_BYTES // per_image)
    outs = [[] for _ in reductions]
    for start in range(0, len(X), step):
        chunk = X[start:start + step].reshape(min(step, len(X) - start), -1)
        for out, reduce in zip(outs, reductions):
            out.append(reduce(chunk))
    return [np.concatenate(out) for out in outs]


# --------------------------------------------------------------------------
# Decoding


def decode_bytes(data: bytes, draft: int | None = None) -> np.ndarray:
    """Decode an encoded image to a ``(C, H, W)`` array (see :meth:`ImageSource.load`).

    PIL decodes every format, with EXIF orientation applied. The header is
    read first: an image over PIL's pixel limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is refused before decoding. JPEGs are
    decoded at reduced size (DCT scaling) when ``draft`` is much smaller.
    """
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refused as a decompression bomb ({exc})") from None
    except Exception:
        raise ValueError("not a readable image file (unknown or corrupt format)") from None
    with im:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and im.width * im.height > limit:
            raise ValueError(
                f"refused as a decompression bomb: {im.width}x{im.height} pixels "
                f"exceed PIL.Image.MAX_IMAGE_PIXELS={limit}"
            )
        try:
            if im.format == "JPEG" and draft:
                im.draft(im.mode if im.mode in ("RGB", "L") else None, (draft, draft))
            return _pil_to_chw(upright(im))
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(
                f"could not be decoded ({exc.__class__.__name__}: {exc})"
            ) from None


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says; the one rule for every input
    that carries EXIF (files, and PIL images opened by the caller)."""
    if im.getexif().get(ExifTags.Base.Orientation, 1) in (1, None):
        return im
    return ImageOps.exif_transpose(im)


def _pil_to_chw(im: Image.Image) -> np.ndarray:
    im.load()
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
        return arr[None].copy()
    elif mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"32-bit integer pixels outside 0..65535 (mode {mode})")
        return arr.astype(np.uint16)[None].copy()
    elif mode == "F":
        return _array_to_chw(np.asarray(im, dtype=np.float32))
    elif mode == "LA":
        im = im.convert("L")
    elif mode != "L" and mode != "RGB":
        im = im.convert("RGB")  # RGBA, P, PA, CMYK, YCbCr, LAB, HSV
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    return _chw(arr)


def _array_to_chw(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("contains NaN or infinity")
    return _chw(arr)


def _chw(hwc: np.ndarray) -> np.ndarray:
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    if not chw.flags.writeable:  # PIL buffers and read-only user arrays
        chw = chw.copy()
    return chw


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """Decoded pixels (uint8, uint16 or float in [0, 1]) as float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535)
    return arr.astype(np.float32, copy=False)
