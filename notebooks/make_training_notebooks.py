"""Write the three training notebooks (outputs stripped): python notebooks/make_training_notebooks.py

* init.ipynb: a 20-layer plain CNN under four initializations; vanishing activations and gradients.
* regularization.ipynb: the same kind of CNN with and without batch norm and dropout; dead ReLUs over training.
* finetune.ipynb: fine-tuning the real mobilenet_v2 on a generated task; which layers moved (CKA).

Each trains for real on data it generates (coloured shapes and stripes). ``FMAPVIZ_SHORT=1`` runs a few
steps only (the test suite does this); without it each notebook takes a few minutes on 2 CPUs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = """import os

import torch
from torch import nn

import fmapviz

SHORT = os.environ.get("FMAPVIZ_SHORT") == "1"  # the test suite's quick run: a few steps only
torch.set_num_threads(2)
torch.manual_seed(0)"""

SHAPES = '''CLASSES = ["circle", "square", "triangle", "stripes"]


def make_shapes(count: int, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (count, 3, size, size) in [0, 1] of one random-coloured shape each, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(count, 2, generator=generator) * size * 0.4 + size * 0.3
    radius = (torch.rand(count, generator=generator) * 0.12 + 0.2) * size
    dy, dx, r = rows - centre[:, 0, None, None], cols - centre[:, 1, None, None], radius[:, None, None]
    masks = torch.stack(
        [
            dy**2 + dx**2 < r**2,  # circle
            (dy.abs() < 0.85 * r) & (dx.abs() < 0.85 * r),  # square
            (dy < 0.8 * r) & (dy > -r) & (dx.abs() < 0.6 * (dy + r)),  # triangle
            (dy.abs() < r) & (dx.abs() < r) & ((rows + cols) // 3 % 2 == 0),  # a striped patch
        ],
        dim=1,
    )[torch.arange(count), labels]
    foreground = torch.rand(count, 3, 1, 1, generator=generator)
    background = torch.rand(count, 3, 1, 1, generator=generator) * 0.6
    noise = 0.08 * torch.randn(count, 3, size, size, generator=generator)
    return (torch.where(masks[:, None], foreground, background) + noise).clamp(0, 1), labels'''

TRAIN = '''def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int = 32,
          seed: int = 0, every: int = 0, on_step=None, bn_eval: bool = False, adam: bool = False) -> list[float]:
    """SGD with momentum (or Adam); returns the loss of every step. ``on_step(step)`` runs every ``every`` steps.

    ``bn_eval`` keeps batch-norm layers in eval mode (their running statistics frozen), as usual when fine-tuning.
    """
    generator = torch.Generator().manual_seed(seed)
    if adam:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    model.train()
    for module in model.modules():
        if bn_eval and isinstance(module, nn.BatchNorm2d):
            module.eval()
    for step in range(steps):
        if every and on_step and step % every == 0:
            on_step(step)
        index = torch.randint(0, len(x), (batch,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())'''

INIT_CELLS = [
    (
        "md",
        """# Initialization: watching the signal vanish

A plain 20-layer CNN (3×3 convolutions and ReLUs, no batch norm, no skip connections) under four
initializations. `fmapviz.init_report` runs one forward and one backward pass and measures, per layer,
the activations' mean, standard deviation and fraction of zeros and the size of the gradient coming back,
and flags layers where either vanishes or explodes. Then we train each network for real on generated
shapes and see which ones learn. Everything runs offline on CPU.""",
    ),
    ("code", SETUP),
    ("code", SHAPES + "\n\n\n" + TRAIN),
    (
        "code",
        """x_train, y_train = make_shapes(2048, seed=0)
x_test, y_test = make_shapes(512, seed=1)
x_train, x_test = (x_train - 0.5) / 0.25, (x_test - 0.5) / 0.25  # inputs of std ~1
from fmapviz.plot import annotated_grid

annotated_grid(x_test[:8] * 0.25 + 0.5, [CLASSES[int(label)] for label in y_test[:8]], ncols=8, tile_pixels=64)""",
    ),
    (
        "code",
        """def small_normal(conv):
    nn.init.normal_(conv.weight, 0.0, 0.01)


INITS = {
    "default (PyTorch)": None,
    "He (Kaiming normal)": lambda conv: nn.init.kaiming_normal_(conv.weight, nonlinearity="relu"),
    "Xavier (Glorot normal)": lambda conv: nn.init.xavier_normal_(conv.weight),
    "N(0, 0.01)": small_normal,
}


def plain_cnn(init, depth: int = 20, width: int = 8, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, channels = [], 3
    for _ in range(depth):
        conv = nn.Conv2d(channels, width, 3, padding=1)
        if init is not None:
            init(conv)
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, len(CLASSES)))


models = {name: plain_cnn(init) for name, init in INITS.items()}
reports = {name: fmapviz.init_report(model, x_train[:64]) for name, model in models.items()}
for name, report in reports.items():
    last = report.layers[-1]
    print(f"{name:24} last ReLU std {last.std:9.2e}  flagged: {len(report.flagged):2} of {len(report.layers)} layers"
          f"  ({len(report.flagged_as('vanishing activations'))} vanishing activations)")""",
    ),
    (
        "md",
        """The classic curves: activation standard deviation and gradient size per layer, on a log scale
(flagged layers are listed above). He initialization keeps both flat through all 20 layers. Xavier (derived
for tanh) halves the variance at every ReLU: its activations shrink by about √2 per layer. PyTorch's default
keeps its activations alive only through its random biases, while the gradient reaching the first layer
is about 10⁻⁸ of the one at the last. N(0, 0.01) shrinks the signal about tenfold per layer, to 10⁻²⁰ and
below. The fraction of zeros is the same for He, Xavier and N(0, 0.01): with zero biases, scaling the
weights scales every activation and keeps its sign.""",
    ),
    ("code", "fmapviz.show_init_report(reports)"),
    (
        "md",
        """The same, as the per-layer activation histograms of the N(0, 0.01) network (red captions are
flagged layers): the distribution keeps its shape while its scale collapses.""",
    ),
    ("code", 'fmapviz.show_init_histograms(reports["N(0, 0.01)"])'),
    (
        "md",
        """Now train each network for the same number of Adam steps (learning rate 10⁻³) on the same batches.""",
    ),
    (
        "code",
        """STEPS = 4 if SHORT else 200
losses = {name: train(model, x_train, y_train, STEPS, lr=1e-3, adam=True) for name, model in models.items()}
for name, model in models.items():
    print(f"{name:24} loss {sum(losses[name][-10:]) / 10:.3f}  test accuracy {accuracy(model, x_test, y_test):.1%}")""",
    ),
    (
        "code",
        """from fmapviz.plot.charts import curve_panels

smooth = {name: torch.tensor(values).unfold(0, min(10, len(values)), 1).mean(1) for name, values in losses.items()}
curve_panels([str(step) for step in range(len(next(iter(smooth.values()))))], {"training loss (10-step mean)": smooth},
             x_title="step", columns=1)""",
    ),
    (
        "md",
        """Chance level is a loss of ln 4 ≈ 1.39 and 25% accuracy. Only the He network leaves it: in our run it
reached a loss of about 0.95 and 50% test accuracy after 200 steps, while the default, Xavier and N(0, 0.01)
networks stayed at ln 4 (27%). The report predicted it before any training: their signal (and for N(0, 0.01) the
gradient, 10⁻²⁶ at the first layer) does not cross the 20 layers, so what reaches the classifier barely
depends on the image. With plain SGD at a learning rate of 0.02 even the He network stayed at chance for 150
steps: a healthy signal at initialization is necessary, not sufficient (the regularization notebook adds
batch norm to a shallower stack). The report of the He network after training:""",
    ),
    ("code", 'print(fmapviz.init_report(models["He (Kaiming normal)"], x_train[:64]))'),
]

REGULARIZATION_CELLS = [
    (
        "md",
        """# Batch norm, dropout and dying ReLUs

The same small plain CNN four ways: plain, with batch norm, with dropout, with both, trained with the
same fairly high learning rate on generated shapes. Checkpoints are saved during training, and
`fmapviz.compare_checkpoints` measures, for every ReLU and every checkpoint, the fraction of **dead**
channels (never positive on any test image), the activation statistics and how far each layer still is
from its final state (CKA to the last checkpoint). A `FeatureMapLogger` writes the same kind of numbers
to TensorBoard while one of the networks trains.""",
    ),
    ("code", SETUP),
    ("code", SHAPES + "\n\n\n" + TRAIN),
    (
        "code",
        """x_train, y_train = make_shapes(2048, seed=0)
x_test, y_test = make_shapes(64 if SHORT else 256, seed=1)
x_train, x_test = (x_train - 0.5) / 0.25, (x_test - 0.5) / 0.25


def build(batchnorm: bool = False, dropout: float = 0.0, width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    layers, channels = [], 3
    for index in range(6):
        stride = 2 if index in (2, 4) else 1
        layers.append(nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, len(CLASSES)))


VARIANTS = {
    "plain": dict(),
    "batch norm": dict(batchnorm=True),
    "dropout": dict(dropout=0.2),
    "batch norm + dropout": dict(batchnorm=True, dropout=0.2),
}""",
    ),
    (
        "code",
        """from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from fmapviz.integrations.tensorboard import FeatureMapLogger

STEPS = 12 if SHORT else 300
EVERY = 4 if SHORT else 25
results = {}
for name, options in VARIANTS.items():
    model = build(**options)
    folder = Path("checkpoints") / name.replace(" ", "_").replace("+", "and")
    folder.mkdir(parents=True, exist_ok=True)

    def save(step, model=model, folder=folder):
        torch.save(model.state_dict(), folder / f"step_{step:04d}.pt")

    losses = train(model, x_train, y_train, STEPS, lr=0.08, every=EVERY, on_step=save)
    save(STEPS)
    results[name] = dict(model=model, folder=folder, losses=losses, accuracy=accuracy(model, x_test, y_test))
    final = sum(losses[-10:]) / len(losses[-10:])
    print(f"{name:22} final loss {final:.3f}  test accuracy {results[name]['accuracy']:.1%}")""",
    ),
    (
        "md",
        """Each series of checkpoints goes through `compare_checkpoints` with the model's own factory (here a
Python function; on the command line, `fmapviz compare checkpoints/plain/step_*.pt --factory net.py:build photos/`).""",
    ),
    (
        "code",
        """series = {}
for name, result in results.items():
    checkpoints = sorted(result["folder"].glob("step_*.pt"))
    series[name] = fmapviz.compare_checkpoints(checkpoints, lambda o=VARIANTS[name]: build(**o), x_test, layers="ReLU")
    dead = " ".join(f"{value:4.0%}" for value in series[name].dead_fraction[-1].tolist())
    print(f"{name:22} dead ReLU channels at the end, per layer: {dead}")""",
    ),
    (
        "md",
        """A ReLU channel that is never positive passes no gradient back to its filter, so nothing in its own
update revives it. Batch norm re-centres every channel before its ReLU, which keeps most channels firing on
some images. The curves per layer, first without and then with batch norm:""",
    ),
    ("code", 'fmapviz.show_checkpoints(series["plain"])'),
    ("code", 'fmapviz.show_checkpoints(series["batch norm"])'),
    (
        "code",
        """from fmapviz.plot.charts import curve_panels

steps = [path.stem.split("_")[1] for path in sorted(results["plain"]["folder"].glob("step_*.pt"))]
curve_panels(
    steps,
    {
        "dead ReLU channels (all layers)": {name: curves.dead_fraction.mean(1) for name, curves in series.items()},
        "CKA of the last ReLU to its final state": {name: c.cka_to_final[:, -1] for name, c in series.items()},
    },
    x_title="training step", ranges={"dead ReLU channels (all layers)": (0, 1)},
)""",
    ),
    (
        "md",
        """The same channel health, logged to TensorBoard during training: `FeatureMapLogger.watch(step)`
captures the chosen layers during the training forward pass of every `every`-th step only and removes
its hooks at the end of the block. The event file is read back with TensorBoard's own reader.""",
    ),
    (
        "code",
        """from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

model = build()
optimizer = torch.optim.SGD(model.parameters(), lr=0.08, momentum=0.9)
generator = torch.Generator().manual_seed(0)
with SummaryWriter("runs/plain") as writer:
    logger = FeatureMapLogger(writer, model, ["1", "11"], every=EVERY, top=8)
    for step in range(STEPS):
        index = torch.randint(0, len(x_train), (32,), generator=generator)
        with logger.watch(step):
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
events = EventAccumulator("runs/plain", size_guidance={"images": 0, "histograms": 0})
events.Reload()
print("images:", events.Tags()["images"])
print("dead fraction of the last ReLU (11) by step:",
      [(event.step, round(event.value, 2)) for event in events.Scalars("fmapviz/dead_fraction/11")])""",
    ),
]

FINETUNE_CELLS = [
    (
        "md",
        """# Fine-tuning mobilenet_v2: which layers moved?

The real ImageNet mobilenet_v2 is fine-tuned on a task it has never seen: telling four generated shapes
apart. Afterwards `fmapviz.compare` runs the original and the fine-tuned network over the same test
images and measures, for every pair of blocks, how similar their representations are (linear CKA, 1 =
the same up to rotation and scale). The usual picture of transfer learning should appear: early blocks
(edges, colours) unchanged, late blocks re-purposed. Needs the IMAGENET1K_V1 weights in `$TORCH_HOME`.""",
    ),
    ("code", SETUP),
    ("code", SHAPES + "\n\n\n" + TRAIN),
    (
        "code",
        """import copy

loaded = fmapviz.load_model("mobilenet_v2", weights="IMAGENET1K_V1")
mean, std = torch.tensor(loaded.mean).view(1, 3, 1, 1), torch.tensor(loaded.std).view(1, 3, 1, 1)
x_train, y_train = make_shapes(1024 if not SHORT else 128, size=64, seed=0)
x_test, y_test = make_shapes(64 if SHORT else 256, size=64, seed=1)
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

original = loaded.model.eval()
tuned = copy.deepcopy(original)
tuned.classifier[1] = nn.Linear(1280, len(CLASSES))
print("before: accuracy", f"{accuracy(tuned, x_test, y_test):.1%}", "(a random head)")""",
    ),
    (
        "code",
        """STEPS = 4 if SHORT else 30
# a fine-tuning learning rate (0.01 rewrites even the first blocks); ImageNet's batch-norm statistics kept
losses = train(tuned, x_train, y_train, STEPS, lr=0.001, bn_eval=True)
final = sum(losses[-10:]) / len(losses[-10:])
print(f"after {STEPS} steps: loss {final:.3f}, test accuracy {accuracy(tuned, x_test, y_test):.1%}")""",
    ),
    (
        "code",
        """result = fmapviz.compare(loaded, tuned, x_test, names=("ImageNet", "fine-tuned"))
for layer in result.layers_a[:-1]:
    print(f"{layer:12} CKA {result.similarity(layer, layer):.3f}")""",
    ),
    (
        "md",
        """In our check of this recipe (30 steps on 512 training images, 62 of 64 test images right) the first
eight blocks kept a CKA above 0.96 with their ImageNet selves while the last blocks fell to 0.4–0.65. With the
learning rate at 0.01, `features.2` fell to 0.59 within 15 steps; with the batch-norm statistics re-estimated on
the shapes as well, `features.1` fell to 0.57 in 100 steps. What "early layers stay put" means depends on how
you fine-tune, and CKA shows it. The whole matrix, every block against every block:""",
    ),
    ("code", "fmapviz.show_cka(result)"),
    (
        "code",
        """from fmapviz.plot.charts import curve_panels

blocks = result.layers_a[:-1]
title = "CKA of each block with itself, before and after fine-tuning"
same_block = torch.tensor([result.similarity(block, block) for block in blocks])
curve_panels(blocks, {title: {"CKA": same_block}}, x_title="block", ranges={title: (0, 1.02)}, columns=1)""",
    ),
    (
        "md",
        """Feature maps of the same test image in both networks, at four blocks from shallow to deep, the same
channel indices in both rows: the early maps are the same maps; the deep ones were rewritten.""",
    ),
    ("code", "fmapviz.show_side_by_side(result, top=8)"),
]


def write(name: str, cells: list[tuple[str, str]]) -> Path:
    notebook = new_notebook(
        cells=[new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    path = Path(__file__).resolve().parent / name
    nbformat.write(notebook, path)
    return path


def main() -> None:
    for name, cells in (
        ("init.ipynb", INIT_CELLS),
        ("regularization.ipynb", REGULARIZATION_CELLS),
        ("finetune.ipynb", FINETUNE_CELLS),
    ):
        print(write(name, cells))


if __name__ == "__main__":
    main()
