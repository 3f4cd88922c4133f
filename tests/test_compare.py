"""``sktransfer compare`` and ``sktransfer.compare``: results, budget, bad data sets."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sktransfer import CompareError, compare
from sktransfer.__main__ import main

from .conftest import TINY, make_images
from .test_report import check_report

CHEAP = "logistic_regression,hog_svc"


def _folder(root, n_per_class=6, classes=("bright", "striped")):
    X, y = make_images(2 * n_per_class, size=40)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i, (arr, label) in enumerate(zip(X, y)):
        Image.fromarray(arr).save(root / classes[label] / f"{i:02d}.png")
    return root


def test_compare_python_api_same_folds_for_every_model():
    X, y = make_images(40, size=32)
    res = compare(X, y, models=["logistic_regression", "random_forest", "hog_svc",
                                "small_cnn"],
                  cv=2, train_sizes=[10, 1.0], verbose=False, random_state=0)
    assert set(res["status"]) == {"ok"}
    # 4 models x 2 sizes x 2 folds, each model on the same folds and subsets
    assert len(res) == 16
    assert sorted(res["train_size"].unique().tolist()) == [10, 20]
    for _, g in res.groupby(["train_size", "fold"]):
        assert len(g) == 4
    assert res[["accuracy", "balanced_accuracy", "f1_macro", "roc_auc"]].apply(
        lambda c: c.between(0, 1)).all().all()
    assert (res["fit_s"] > 0).all() and (res["trainable_parameters"] > 0).all()
    # the two synthetic classes are easy: the full-size fits get them right
    full = res[res["train_size"] == 20]
    assert full.groupby("model")["accuracy"].mean().max() == 1.0
    assert res.attrs["classes"] == [0, 1]


def test_cli_on_image_folder_writes_table_and_files(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["compare", str(data), "--models", CHEAP, "--cv", "2",
                 "--train-sizes", "4,1.0", "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "logistic_regression" in table and "hog_svc" in table
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.json",
                                               "learning_curve.png", "report.html"}
    payload = json.loads((out / "results.json").read_text())
    assert payload["classes"] == ["bright", "striped"]
    assert len(payload["rows"]) == 2 * 2 * 2
    assert Image.open(out / "learning_curve.png").size[0] > 100


def test_csv_input_with_relative_paths(tmp_path):
    data = _folder(tmp_path / "data")
    rows = ["file,kind"] + [f"{p.relative_to(data)},{p.parent.name}"
                            for p in sorted(data.rglob("*.png"))]
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    res = compare(data / "labels.csv", models=["logistic_regression"], cv=2,
                  train_sizes=[1.0], path_column="file", label_column="kind", verbose=False)
    assert res.attrs["classes"] == ["bright", "striped"] and len(res) == 2


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    data = _folder(tmp_path / "data")
    (data / "bright" / "broken.png").write_bytes(b"not a png")
    (data / "striped" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    res = compare(data, models=["logistic_regression"], cv=2, train_sizes=[1.0], out=out,
                  verbose=False)
    skipped = res.attrs["skipped_images"]
    assert len(skipped) == 2 and res.attrs["n_images"] == 12
    assert {s["item"].rsplit("/", 1)[-1].strip("'") for s in skipped} == {
        "broken.png", "empty.jpg"}
    assert json.loads((out / "results.json").read_text())["skipped_images"] == skipped


@pytest.mark.parametrize("make_bad, message", [
    (lambda root: root.mkdir(), "holds no images"),
    (lambda root: _folder(root, classes=("a", "b")) and
     [p.unlink() for p in sorted((root / "b").iterdir())[1:]], "fewer images than"),
    (lambda root: _folder(root) and
     [p.rename(root / "bright" / p.name) for p in (root / "striped").iterdir()],
     "one class"),
    (lambda root: root.mkdir() or (root / "x.csv").write_text("file,label\na.png,0\n"),
     "no column 'path'"),
])
def test_bad_data_sets_exit_1_and_write_nothing(tmp_path, capsys, make_bad, message):
    root = tmp_path / "data"
    make_bad(root)
    target = root / "x.csv" if (root / "x.csv").exists() else root
    out = tmp_path / "out"
    assert main(["compare", str(target), "--models", CHEAP, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "error" in err
    assert not out.exists() or not any(out.iterdir())


def test_all_images_unreadable(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(b"junk")
    with pytest.raises(CompareError, match="None of the images"):
        compare(root, models=["logistic_regression"], cv=2, verbose=False)


def test_some_folds_give_the_rows_of_a_full_run():
    X, y = make_images(45, size=32)
    kw = dict(models=["logistic_regression", "random_forest"], cv=3, train_sizes=[10, 1.0],
              verbose=False, random_state=0)
    full = compare(X, y, **kw)
    parts = [compare(X, y, folds=[2, 0], **kw), compare(X, y, folds=[1], **kw)]
    assert parts[0].attrs["folds"] == [0, 2] and full.attrs["folds"] == [0, 1, 2]
    assert sorted(parts[0]["fold"].unique()) == [0, 2]
    cols = ["model", "train_size", "fold", "accuracy", "roc_auc", "trainable_parameters"]
    key = ["model", "train_size", "fold"]
    joined = pd.concat(parts).sort_values(key)[cols].reset_index(drop=True)
    assert joined.equals(full.sort_values(key)[cols].reset_index(drop=True))


@pytest.mark.parametrize("folds, message", [
    ([3], r"\[3\] not among the fold numbers of cv=3: \[0, 1, 2\]"),
    ([0, 0], "at most once"), ([], "at least one"), ("0", "list of fold numbers"),
    ([1.0], r"\[1.0\] not among"),
])
def test_bad_folds_are_named(folds, message):
    X, y = make_images(12, size=32)
    with pytest.raises(CompareError, match=message):
        compare(X, y, models=["logistic_regression"], cv=3, folds=folds, verbose=False,
                random_state=0)


def test_some_folds_need_random_state():
    X, y = make_images(12, size=32)
    with pytest.raises(CompareError, match=r"folds=\[1\] without random_state"):
        compare(X, y, models=["logistic_regression"], cv=3, folds=[1], verbose=False)
    # every fold is a whole run: a drawn seed is fine (and recorded)
    res = compare(X, y, models=["logistic_regression"], cv=2, folds=[1, 0], train_sizes=[1.0],
                  verbose=False)
    assert res.attrs["folds"] == [0, 1]


def test_cli_folds(tmp_path, capsys):
    data = _folder(tmp_path / "imgs")
    out = tmp_path / "out"
    code = main(["compare", str(data), "--models", "logistic_regression", "--cv", "2",
                 "--folds", "1", "--train-sizes", "1.0", "--random-state", "0",
                 "--out", str(out)])
    assert code == 0
    assert json.loads((out / "results.json").read_text())["folds"] == [1]
    assert main(["compare", str(data), "--folds", "3", "--cv", "2", "--random-state", "0",
                 "--out", str(tmp_path / "bad")]) == 1
    assert "folds=[3]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_model_params_are_set_and_recorded():
    X, y = make_images(30, size=32)
    kw = dict(models=["logistic_regression", "random_forest"], cv=2, train_sizes=[1.0],
              verbose=False, random_state=0)
    plain = compare(X, y, **kw)
    small = compare(X, y, model_params={"random_forest": {"n_estimators": 3}}, **kw)
    assert small.attrs["model_params"] == {"random_forest": {"n_estimators": 3}}
    assert plain.attrs["model_params"] == {}
    forest = small["model"] == "random_forest"
    # 3 trees instead of 300: two orders of magnitude fewer nodes
    assert (small[forest]["trainable_parameters"].to_numpy()
            < plain[forest]["trainable_parameters"].to_numpy() / 30).all()
    cols = ["fold", "accuracy", "trainable_parameters"]
    assert small[~forest][cols].reset_index(drop=True).equals(
        plain[~forest][cols].reset_index(drop=True))


@pytest.mark.parametrize("params, message", [
    ({"fine_tuned": {"max_epochs": 1}},
     r"model_params\['fine_tuned'\]: 'fine_tuned' is not among the models of this run"),
    ({"random_forest": {"n_trees": 3}}, r"model_params\['random_forest'\]: .*n_trees"),
    ({"random_forest": 3}, r"model_params\['random_forest'\]=3: give a dict"),
    ([("random_forest", {})], "give a dict of {model name"),
])
def test_bad_model_params_are_named(params, message):
    X, y = make_images(12, size=32)
    with pytest.raises(CompareError, match=message):
        compare(X, y, models=["random_forest"], cv=2, model_params=params, verbose=False)


def test_model_params_reach_the_transfer_models():
    X, y = make_images(12, size=32)
    tiny = {"backbone": TINY["backbone"], "weights": None, "engine": "torch",
            "trainable_stages": "all", "max_epochs": 1}
    res = compare(X, y, models=["fine_tuned"], cv=2, train_sizes=[1.0], image_size=32,
                  random_state=0, verbose=False, model_params={"fine_tuned": tiny})
    assert (res["status"] == "ok").all()
    # timm's test network, not Lite0's millions of weights
    assert (res["trainable_parameters"] < 1e6).all()
    assert res.attrs["model_params"] == {"fine_tuned": tiny}


def test_cli_param(tmp_path):
    data = _folder(tmp_path / "imgs")
    out = tmp_path / "out"
    code = main(["compare", str(data), "--models", "random_forest,logistic_regression",
                 "--cv", "2", "--train-sizes", "1.0", "--param", "random_forest.n_estimators=4",
                 "--param", "random_forest.criterion=entropy", "--out", str(out)])
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["model_params"] == {"random_forest": {"n_estimators": 4,
                                                       "criterion": "entropy"}}
    with pytest.raises(SystemExit):  # argparse: exit status 2 and the expected form
        main(["compare", str(data), "--param", "random_forest.n_estimators"])


def test_time_budget_skips_and_reports():
    X, y = make_images(40, size=32)
    res = compare(X, y, models=["small_cnn"], cv=2, train_sizes=[10, 20],
                  max_minutes=1e-4, verbose=False)
    # the first fit sets the expected time; every later one would overrun
    assert (res["status"] == "ok").sum() == 1
    assert res["status"].str.startswith("skipped").sum() == len(res) - 1


def test_unknown_model_and_bad_options_are_named():
    X, y = make_images(8, size=32)
    with pytest.raises(CompareError, match="'svm'"):
        compare(X, y, models=["svm"], verbose=False)
    with pytest.raises(CompareError, match="cv=1"):
        compare(X, y, cv=1, verbose=False)
    with pytest.raises(CompareError, match="train_sizes"):
        compare(X, y, train_sizes=[0], verbose=False)


def test_quick_elpv_smoke(tmp_path, capsys):
    """The CI smoke test of the real thing: ELPV, every model, default backbone."""
    pytest.importorskip("elpv_dataset")
    out = tmp_path / "out"
    assert main(["compare", "elpv", "--quick", "--out", str(out),
                 "--memory", str(tmp_path / "cache")]) == 0
    payload = json.loads((out / "results.json").read_text())
    models = {r["model"] for r in payload["rows"] if r["status"] == "ok"}
    assert models == {"logistic_regression", "random_forest", "hog_svc", "small_cnn",
                      "frozen_lr", "fine_tuned"}
    assert payload["n_images"] == 120
    assert "fine_tuned" in capsys.readouterr().out
    check_report(out / "report.html", sorted(models))


def test_same_network_from_scratch_is_opt_in():
    from sktransfer._compare._models import DEFAULT_MODELS, MODELS

    assert "scratch_same" in MODELS and "scratch_same" not in DEFAULT_MODELS
    y = np.arange(10) % 2
    settings = {"quick": False, "image_size": "auto", "memory": None}
    scratch = MODELS["scratch_same"].build(y, 3, settings)
    pretrained = MODELS["fine_tuned"].build(y, 3, settings)
    differ = {k for k, v in scratch.get_params().items() if pretrained.get_params()[k] != v}
    assert differ == {"weights", "trainable_stages"}  # the same network and budget
    assert scratch.weights is None and scratch.trainable_stages == "all"

    X, y = make_images(24, size=32)
    res = compare(X, y, models=["scratch_same"], quick=True, image_size=32, verbose=False,
                  random_state=0)
    assert set(res["status"]) == {"ok"} and set(res["model"]) == {"scratch_same"}
    # every parameter trains: Lite0 without its ImageNet classifier, 3.37 million
    assert (res["trainable_parameters"] > 3.3e6).all()
