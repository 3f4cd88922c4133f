"""Training epochs: images/s of a default fit against the limit and a hand-written fine-tune.

Three ways of training the same network (EfficientNet-Lite0, its last stage
and a new two-class head trainable, 300 px ELPV images, batch 32, AdamW,
gradient clipping), measured side by side in one process:

- ``sktransfer``: ``TransferClassifier(random_state=0, max_epochs=EPOCHS)``,
  every other parameter its default, on ``N_IMAGES`` ELPV images: the
  images/s of each epoch from skorch's history (``dur``), the first epoch
  left out (warm-up);
- ``bare torch loop``: the fitted model's trainable part (its last stage and
  head, :class:`torch.nn.Module` in training mode) on a fixed tensor of the
  frozen part's output, forward, loss, backward, clipping and AdamW step: the
  most this machine does for that part in eager PyTorch, with no data
  pipeline at all. Also compiled with ``torch.compile``, its compile time
  reported apart;
- ``hand-written timm + skorch``: skorch's transfer-learning tutorial adapted
  to Lite0: a timm ``tf_efficientnet_lite0`` with the same ImageNet weights
  and a new head, every parameter but the last stage and head frozen
  (``skorch.callbacks.Freezer``), a torchvision ``Dataset`` that decodes,
  resizes, flips and normalises each image as it is drawn, a ``DataLoader``
  with two worker processes, ``NeuralNetClassifier``.

Run: ``python benchmarks/bench_epoch.py [N_IMAGES] [EPOCHS]``.
Writes ``benchmarks/results/epoch.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine, machine_markdown  # noqa: E402

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer.datasets import load_elpv  # noqa: E402

RESULTS = Path(__file__).parent / "results"
N_IMAGES, EPOCHS, BATCH = 512, 4, 32


def _data(n):
    paths, probability, _ = load_elpv()
    return list(paths[:n]), (probability[:n] > 0.5).astype(int)


def sktransfer_epochs(X, y, epochs):
    clf = TransferClassifier(random_state=0, max_epochs=epochs)
    t = time.perf_counter()
    clf.fit(X, y)
    fit_s = time.perf_counter() - t
    rates = [len(X) / row["dur"] for row in clf.history_[1:]]
    return clf, {"fit_s": fit_s, "epoch_images_per_s": rates,
                 "images_per_s": statistics.median(rates),
                 "image_size": clf.image_size_, "engine": clf.engine_}


def bare_loop(clf, n, epochs, compiled=False):
    """Forward, loss, backward, clipping and AdamW over the trainable part."""
    network = clf.model_
    torch.manual_seed(0)
    with torch.no_grad():
        size = clf.image_size_
        x0 = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
        shape = network.forward_units(x0, 0, network.cut).shape[1:]
    x = torch.randn(n, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (n,))

    class Top(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return self.net.head(self.net.forward_units(z, self.net.cut).flatten(1))

    top = Top(network).train()
    params = [p for p in top.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    step = torch.compile(top) if compiled else top
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        for s in range(0, n, BATCH):
            opt.zero_grad()
            loss = loss_fn(step(x[s:s + BATCH]), y[s:s + BATCH])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

    t = time.perf_counter()
    epoch()  # warm-up (and the compilation)
    first_s = time.perf_counter() - t
    rates = []
    for _ in range(epochs - 1):
        t = time.perf_counter()
        epoch()
        rates.append(n / (time.perf_counter() - t))
    return {"first_epoch_s": first_s, "epoch_images_per_s": rates,
            "images_per_s": statistics.median(rates), "input_shape": list(shape)}


class _Images(torch.utils.data.Dataset):
    """What a hand-written fine-tune reads: decode, resize, flip, normalise per item."""

    def __init__(self, paths, y, size):
        from torchvision import transforms as T

        self.paths, self.y = paths, y
        self.tf = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(),
                             T.RandomVerticalFlip(), T.ToTensor(),
                             T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), int(self.y[i])


def hand_written(X, y, epochs, size):
    import timm
    from skorch import NeuralNetClassifier
    from skorch.callbacks import Freezer, GradientNormClipping

    from sktransfer._testing import load_backbone

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    model.load_state_dict(load_backbone("efficientnet_lite0").model.state_dict())
    model.reset_classifier(2)
    model = model.to(memory_format=torch.channels_last)
    trainable = ("blocks.5", "blocks.6", "conv_head", "bn2", "classifier")
    net = NeuralNetClassifier(
        model, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.AdamW, lr=1e-3,
        batch_size=BATCH, max_epochs=epochs, train_split=None, verbose=0,
        iterator_train__shuffle=True, iterator_train__num_workers=2,
        iterator_train__persistent_workers=True,
        callbacks=[Freezer(lambda name: not name.startswith(trainable)),
                   GradientNormClipping(1.0)])
    t = time.perf_counter()
    net.fit(_Images(X, y, size), y=None)
    fit_s = time.perf_counter() - t
    rates = [len(X) / row["dur"] for row in net.history[1:]]
    return {"fit_s": fit_s, "epoch_images_per_s": rates,
            "images_per_s": statistics.median(rates)}


def main(n=N_IMAGES, epochs=EPOCHS):
    X, y = _data(n)
    out = {"n_images": n, "epochs": epochs, "batch_size": BATCH}
    clf, out["sktransfer"] = sktransfer_epochs(X, y, epochs)
    print("sktransfer", out["sktransfer"]["images_per_s"], file=sys.stderr, flush=True)
    out["bare torch loop"] = bare_loop(clf, n, epochs)
    print("bare", out["bare torch loop"]["images_per_s"], file=sys.stderr, flush=True)
    out["bare torch loop, torch.compile"] = bare_loop(clf, n, epochs, compiled=True)
    print("compiled", out["bare torch loop, torch.compile"], file=sys.stderr, flush=True)
    out["hand-written timm + skorch"] = hand_written(X, y, epochs, clf.image_size_)
    print("hand-written", out["hand-written timm + skorch"], file=sys.stderr, flush=True)
    out["machine"] = describe_machine()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "epoch.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "epoch.md").write_text(render(out))


ROWS = ["sktransfer", "bare torch loop", "bare torch loop, torch.compile",
        "hand-written timm + skorch"]


def render(r) -> str:
    lines = ["# Training epochs: images/s", "",
             "Written by `benchmarks/bench_epoch.py` from `epoch.json`: "
             f"{r['n_images']} ELPV images at {r['sktransfer']['image_size']} px, "
             f"batch {r['batch_size']}, {r['epochs']} epochs, the first left out; median "
             "images/s of the others. EfficientNet-Lite0 with its last stage and a new head "
             "trainable in every row.", "",
             "| how | images/s per epoch | vs sktransfer | each epoch | note |",
             "|---|---|---|---|---|"]
    ref = r["sktransfer"]["images_per_s"]
    notes = {
        "sktransfer": f"whole fit {r['sktransfer']['fit_s']:.0f} s (frozen part once, "
                      f"engine {r['sktransfer']['engine']})",
        "bare torch loop": "trainable part only, on a fixed tensor: no data pipeline",
        "bare torch loop, torch.compile":
            "first epoch (with compiling) "
            f"{r['bare torch loop, torch.compile']['first_epoch_s']:.0f} s",
        "hand-written timm + skorch":
            f"whole network forward per image and epoch; fit "
            f"{r['hand-written timm + skorch']['fit_s']:.0f} s",
    }
    for name in ROWS:
        v = r[name]
        each = ", ".join(f"{e:.1f}" for e in v["epoch_images_per_s"])
        lines.append(f"| {name} | {v['images_per_s']:.1f} | {v['images_per_s'] / ref:.2f}x "
                     f"| {each} | {notes[name]} |")
    lines += ["", "## Machine", "", machine_markdown(r["machine"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
