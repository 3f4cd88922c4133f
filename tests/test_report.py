"""What a user sees: compare's report.html, and the display of a model's mistakes."""

import base64
import io
import re
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
from PIL import Image

from sktransfer import TopLossesDisplay, TransferClassifier
from sktransfer.__main__ import main

from .conftest import TINY, make_images, write_pngs

matplotlib.use("Agg")


class _Page(HTMLParser):
    """Everything of a page that could reach outside it, and its images."""

    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.sources, self.text = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            if attrs.get(name):
                self.sources.append((tag, name, attrs[name]))

    def handle_data(self, data):
        self.text.append(data)


def check_report(path, models) -> dict:
    """Parse ``report.html``: it stands alone (no script, no external URL,
    every image embedded and decodable), has every section, names every
    model; returns what was found."""
    from sktransfer._compare._html import SECTIONS
    from sktransfer._compare._models import MODELS

    raw = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 10 * 2**20
    page = _Page()
    page.feed(raw)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"url\(|@import|https?://|//cdn", raw), "a reference outside the page"
    images = 0
    for tag, name, value in page.sources:
        if tag == "a" and value.startswith("#"):
            continue  # the page's own sections
        assert tag == "img" and name == "src", (tag, name, value[:80])
        assert value.startswith("data:image/png;base64,"), value[:80]
        image = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
        image.load()  # decodes the whole image
        assert image.size[0] > 50 and image.size[1] > 20
        images += 1
    assert {anchor for anchor, _ in SECTIONS} <= page.ids
    text = " ".join(page.text)
    for _, title in SECTIONS:
        assert title in text, title
    for model in models:
        assert MODELS[model].label in text, model
    return {"images": images, "text": text}


def _image_folder(root, n_per_class=12):
    X, y = make_images(2 * n_per_class, size=40)
    for label, name in enumerate(("bright", "striped")):
        (root / name).mkdir(parents=True)
        write_pngs(X[y == label], root / name)
    return root


def test_quick_compare_on_a_folder_writes_a_report_that_stands_alone(tmp_path, capsys):
    data = _image_folder(tmp_path / "data")
    (data / "striped" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["compare", str(data), "--quick", "--out", str(out),
                 "--random-state", "0"]) == 0
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.json",
                                               "learning_curve.png", "report.html"}
    models = ["logistic_regression", "random_forest", "hog_svc", "small_cnn", "frozen_lr",
              "fine_tuned"]
    found = check_report(out / "report.html", models)
    # curves, confusion matrices, mistakes or disagreements: pictures, all embedded
    assert found["images"] >= 2
    assert "broken.png" in found["text"]  # the skipped image, with its reason
    assert "random_state" in found["text"] and "scikit-learn" in found["text"]
    assert "writing report.html" in capsys.readouterr().err  # the progress line


def test_no_report_writes_none(tmp_path):
    data = _image_folder(tmp_path / "data", n_per_class=6)
    out = tmp_path / "out"
    assert main(["compare", str(data), "--models", "logistic_regression", "--cv", "2",
                 "--train-sizes", "1.0", "--out", str(out), "--no-report"]) == 0
    assert not (out / "report.html").exists()


def test_a_report_without_the_transfer_models_says_what_it_lacks(tmp_path):
    from sktransfer import compare

    X, y = make_images(24, size=32)
    path = tmp_path / "report.html"
    compare(X, y, models=["logistic_regression", "hog_svc"], cv=2, train_sizes=[1.0],
            report=path, verbose=False, random_state=0)
    found = check_report(path, ["logistic_regression", "hog_svc"])
    assert "The fine-tuned model was not run" in found["text"]


# -- the display of a model's mistakes --------------------------------------------------


def test_top_losses_are_the_mistakes_with_the_highest_loss():
    X, _ = make_images(6, size=32)
    y = np.array(["a", "b", "a", "b", "a", "b"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05], [0.6, 0.4],
                      [0.45, 0.55]])
    display = TopLossesDisplay.from_predictions(y, proba, X, classes=["a", "b"], n=5)
    # wrong: 2 (p(a)=0.3) and 3 (p(b)=0.05); the larger loss first
    assert display.indices.tolist() == [3, 2]
    assert display.y_pred.tolist() == ["a", "b"] and display.y_true.tolist() == ["b", "a"]
    np.testing.assert_allclose(display.losses, -np.log([0.05, 0.3]))
    np.testing.assert_allclose(display.proba_pred, [0.95, 0.7])
    assert len(display.figure_.axes) == 2
    assert display.axes_[0].get_title().startswith("a (0.95), true: b")
    with pytest.raises(ValueError, match=r"labels \['c'\] that are not among classes"):
        TopLossesDisplay.from_predictions(["c"] * 6, proba, X, classes=["a", "b"])
    with pytest.raises(ValueError, match="y_proba must have shape"):
        TopLossesDisplay.from_predictions(y, proba[:, :1], X, classes=["a", "b"])


def test_top_losses_of_an_estimator_carry_its_heatmaps():
    X, y = make_images(16, size=32)
    labels = np.where(y == 1, "crack", "ok")
    clf = TransferClassifier(**TINY, max_epochs=1).fit(X, labels)
    flipped = np.where(labels == "ok", "crack", "ok")  # every answer now a mistake
    display = TopLossesDisplay.from_estimator(clf, X, flipped, n=4, plot=False)
    assert len(display.indices) == 4 and display.heatmaps.shape == (4, 32, 32)
    explained = clf.explain(X[display.indices], target=display.y_pred)
    np.testing.assert_array_equal(display.heatmaps, explained)
    display.plot(n_cols=2)
    assert display.figure_ is display.axes_[0].figure and len(display.axes_) == 4
    plain = TopLossesDisplay.from_estimator(clf, X, flipped, n=4, heatmaps=False)
    assert plain.heatmaps is None


def test_no_mistakes_is_said():
    X, _ = make_images(2, size=32)
    display = TopLossesDisplay.from_predictions(["a", "b"], [[0.9, 0.1], [0.1, 0.9]], X,
                                                classes=["a", "b"])
    assert len(display.indices) == 0
    assert display.axes_[0].texts[0].get_text() == "no mistakes"
