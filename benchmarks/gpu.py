"""fmapviz on a GPU beside its peers, in one process: every ratio of issue 25 from one run, with the device named.

    python benchmarks/gpu.py                    # on the first CUDA device (about 4-6 minutes on an H100 or H200)
    python benchmarks/gpu.py --device cpu --quick   # tiny sizes and rounds: a smoke test (under 2 minutes)
    python benchmarks/gpu.py --photos DIR       # the photos (default ../shared/imagenet-samples); TORCH_HOME: weights

Rows, each at equal work on both sides (interleaved rounds, `torch.cuda.synchronize()` before and after every
timed call, warm-up first, medians): capture (4 layers and every module, with a check that every-module values
equal a clone-in-hook capture), Grad-CAM (and the default call ``layers=None``), Integrated Gradients, SmoothGrad,
TF32 on/off, Score-CAM, activation maximization against torch-lucent, then the correctness of every saliency
method on the device against the CPU, the CUDA memory left after 50 Grad-CAM calls, and the explorer (last).
A peer that is not installed gets "not installed" in its cell; a row that fails gets its error and the run goes on.
Each row is printed as soon as it is measured and the section is rewritten (``results/gpu.md``, and ``$OUT/gpu.md``
when OUT is set), so a run cut short keeps what it measured. ``--quick`` writes no ``results/gpu.md``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Score-CAM draws a progress bar per call
warnings.filterwarnings("ignore")  # captum's notes on hooks and requires_grad, once per call

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from common import SHARED, machine_line, markdown_table, time_interleaved, write_section  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fmapviz  # noqa: E402

CAPTURE_LAYERS = {
    "resnet50": ["layer1", "layer2", "layer3", "layer4"],
    "mobilenet_v2": ["features.4", "features.7", "features.14", "features.18"],
}
EXPLORER_LAYERS = ["features.7", "features.14"]
QUICK_EXPLORER_LAYERS = ["features.2", "features.4"]  # 24 + 32 channels instead of 64 + 160
MISSING = "not installed"
# the saliency methods of the registry when this was written, for when the registry has moved
KNOWN_METHODS = (
    "gradient input_x_gradient smoothgrad integrated_gradients guided_backprop gradcam gradcam++ layercam "
    "guided_gradcam xgradcam hirescam eigencam eigengradcam scorecam ablationcam fullgrad smoothgrad_campp "
    "occlusion feature_ablation kernel_shap deeplift gradient_shap deconvolution lrp"
).split()
# Fewer masked forwards for the CPU reference of the slowest methods (the device comparison holds at any setting):
# with their defaults these take minutes on the CPU, time the GPU machine is held idle.
LIGHT_OPTIONS = {
    "occlusion": {"patch": 32, "stride": 32},
    "feature_ablation": {"patch": 32},
    "kernel_shap": {"patch": 32, "samples": 100},
    "scorecam": {"top": 256},
}
QUICK_OPTIONS = {"scorecam": {"top": 32}, "ablationcam": {"top": 32}, "kernel_shap": {"patch": 32, "samples": 16}}


@dataclass(frozen=True)
class Sizes:
    """How much work each row does; :data:`QUICK` shrinks everything for a CPU smoke test."""

    side: int = 224
    capture_batches: tuple[int, int] = (1, 64)
    capture_rounds: tuple[int, int] = (30, 10)
    cam_batches: tuple[int, int] = (1, 32)
    rounds: int = 15
    slow_rounds: int = 7
    steps: int = 50
    samples: int = 25
    scorecam_rounds: int = 5
    actmax_channels: int = 64
    actmax_size: int = 224
    actmax_steps: int = 256
    memory_calls: int = 50
    explorer_photos: int | None = None  # None: every photo
    quick: bool = False


FULL = Sizes()
QUICK = Sizes(
    side=64, capture_batches=(1, 4), capture_rounds=(2, 2), cam_batches=(1, 4), rounds=2, slow_rounds=1, steps=8,
    samples=4, scorecam_rounds=1, actmax_channels=4, actmax_size=64, actmax_steps=8, memory_calls=3,
    explorer_photos=4, quick=True,
)  # fmt: skip


class Results:
    """The rows measured so far: printed as they come and rewritten to the section file after each one."""

    def __init__(self, title: str, command: str, header: list[str], write_results: bool) -> None:
        self.title, self.command, self.header, self.write_results = title, command, header, write_results
        self.rows: list[list[str]] = []
        self.checks: list[list[str]] = []

    def add(self, row: list[str]) -> None:
        self.rows.append(row)
        print("| " + " | ".join(row) + " |", flush=True)
        self.write()

    def add_check(self, row: list[str]) -> None:
        self.checks.append(row)
        print("  check: " + " | ".join(row), flush=True)
        self.write()

    def body(self) -> str:
        check_header = [
            "method",
            "max normalized \\|GPU − CPU\\| (TF32 as the user left it)",
            "same, cudnn.allow_tf32=False",
            "result on the device",
            "hooks left",
            "requires_grad restored",
        ]
        parts = [
            "\n".join(self.header),
            markdown_table(["work (equal on both sides)", "peers / reference", "fmapviz"], self.rows),
        ]
        if self.checks:
            parts.append(
                "Every saliency method on the device against the CPU (real mobilenet_v2, 2 photos, default "
                "options but the fewer masks named beside a method, `layers=None`): each image's map divided by "
                "its max |value|, then the max |difference|.\n\n" + markdown_table(check_header, self.checks)
            )
        return "\n\n".join(parts)

    def write(self) -> None:
        body = self.body()
        text = None
        if self.write_results:
            text = write_section("gpu", self.title, self.command, body).read_text()
        out = os.environ.get("OUT")
        if out:
            text = text or f"## {self.title}\n\nCommand: `{self.command}` ({machine_line()})\n\n{body}\n"
            Path(out, "gpu.md").write_text(text)


def optional(module: str) -> types.ModuleType | None:
    """A peer's module, or None when it is not installed (or does not import)."""
    try:
        return importlib.import_module(module)
    except Exception:  # an optional peer: a broken install reads as missing, never stops the run
        return None


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return MISSING


def ratio_cell(label: str, times: dict[str, float], key: str, base: float) -> str:
    return f"{label} {times[key] / base:.2f}×" if key in times else f"{label} {MISSING}"


def versus(ours: float, theirs: float) -> str:
    """``"1.37× slower"`` or ``"2.10× faster"``: fmapviz's time against a peer's."""
    return f"{theirs / ours:.2f}× faster" if ours <= theirs else f"{ours / theirs:.2f}× slower"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def max_difference(a: torch.Tensor, b: torch.Tensor, scaling: str = "max_abs") -> float:
    """Max |a - b| after scaling each image's map: by its max |value| (``max_abs``) or to [0, 1] (``min_max``)."""

    def scaled(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.detach().cpu().double().flatten(1)
        if scaling == "min_max":
            low = flat.amin(1, keepdim=True)
            return (flat - low) / (flat.amax(1, keepdim=True) - low + 1e-7)
        return flat / flat.abs().amax(1, keepdim=True).clamp_min(1e-12)

    return float((scaled(a) - scaled(b)).abs().max())


def hooks_left(model: torch.nn.Module) -> int:
    """Module hooks still registered on ``model`` (forward, pre-forward, backward, pre-backward)."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)


def upsample(cam: torch.Tensor, side: int) -> torch.Tensor:
    """A peer's low-resolution CAMs (N, h, w) or (N, 1, h, w), bilinearly to the input size."""
    maps = cam.reshape(cam.shape[0], 1, *cam.shape[-2:])
    return F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)


class Bench:
    """The device, the sizes and the models shared by the rows."""

    def __init__(self, device: torch.device, sizes: Sizes, photos: list[Path], results: Results) -> None:
        self.device, self.sizes, self.photos, self.results = device, sizes, photos, results
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        torch.manual_seed(0)
        self.resnet50 = torchvision.models.resnet50(weights=None).eval().to(device)
        try:  # the real weights, from $TORCH_HOME (offline)
            self.weights: str | None = "IMAGENET1K_V1"
            self.loaded = fmapviz.load_model("mobilenet_v2", weights=self.weights)  # on the CPU
        except fmapviz.FmapvizError as error:
            self.weights = None
            self.loaded = fmapviz.load_model("mobilenet_v2", weights=None)
            results.header.append(f"**mobilenet_v2's real weights did not load ({error}): random weights below.**")
        self.mobilenet = copy.deepcopy(self.loaded.model).to(device)
        x = fmapviz.load_image([str(path) for path in photos[:2]], self.loaded.transform).tensor
        self.two_photos = x if sizes.side == 224 else F.interpolate(x, size=(sizes.side, sizes.side), mode="bilinear")

    def time(self, methods: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
        return time_interleaved(methods, rounds=rounds, warmup=warmup, sync=self.sync)

    def randn(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, 3, self.sizes.side, self.sizes.side, device=self.device)

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def floor(self, model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Callable[[], object]:
        """One forward plus the input gradient of each row's target logit, parameters frozen."""

        def run() -> object:
            with fmapviz.model_guard(model):
                inputs = x.clone().requires_grad_(True)
                return torch.autograd.grad(model(inputs).gather(1, classes[:, None]).sum(), inputs)

        return run

    # 1. capture ---------------------------------------------------------------------------------------------

    def capture(self) -> None:
        for name, four in CAPTURE_LAYERS.items():
            torch.manual_seed(0)
            model = self.resnet50 if name == "resnet50" else torchvision.models.mobilenet_v2(weights=None)
            model = model.eval().to(self.device)
            for batch, rounds in zip(self.sizes.capture_batches, self.sizes.capture_rounds):
                self._capture_case(name, model, four, batch, rounds)
            del model
            self.free()

    def _capture_case(self, name: str, model: torch.nn.Module, four: list[str], batch: int, rounds: int) -> None:
        x = self.randn(batch)
        modules = dict(model.named_modules())
        methods: dict[str, Callable[[], object]] = {
            "plain": lambda: model(x),
            "fmapviz 4": lambda: fmapviz.feature_maps(model, x, four, stop_early=False),
            "fmapviz all": lambda: capture_all(model, x),
            "clone-in-hook all": lambda: clone_in_hook(model, x),
        }
        captum = optional("captum.attr")
        if captum is not None:
            layer_activation = captum.LayerActivation(model, [modules[layer] for layer in four])
            methods["captum 4"] = lambda: layer_activation.attribute(x)
        with torch.no_grad():
            times = self.time(methods, rounds, warmup=2)
            ours, reference = capture_all(model, x), clone_in_hook(model, x)
        shared = [key for key in reference if key in ours]
        equal = sum(torch.equal(ours[key], reference[key]) for key in shared)
        worst = max((float((ours[key] - reference[key]).abs().max()) for key in shared), default=0.0)
        total = len(reference)
        del ours, reference
        base = times["plain"]
        work = f"{name} b{batch}, × plain forward ({ms(base)})"
        self.results.add(
            [
                f"capture 4 layers, {work}",
                ratio_cell("captum LayerActivation", times, "captum 4", base),
                f"{times['fmapviz 4'] / base:.2f}× (feature_maps)",
            ]
        )
        values = f"{equal}/{total} maps equal to clone-in-hook" + (f", max \\|Δ\\| {worst:.1e}" if worst else "")
        self.results.add(
            [
                f"capture every module, {work} ({values})",
                ratio_cell("clone-in-hook", times, "clone-in-hook all", base) + " (captum cannot)",
                f"{times['fmapviz all'] / base:.2f}× (capture 'all')",
            ]
        )

    # 2. Grad-CAM ---------------------------------------------------------------------------------------------

    def gradcam(self) -> None:
        explicit: dict[str, tuple[float, float]] = {}
        for batch in self.sizes.cam_batches:
            times = self._gradcam_case(self.resnet50, "layer4", self.randn(batch))
            base = times["floor"]
            peers = ", ".join(
                ratio_cell(label, times, label, base)
                for label in (
                    "captum LayerGradCam + upsample",
                    "torchcam GradCAM + upsample",
                    "pytorch-grad-cam GradCAM",
                )
            )
            self.results.add(
                [
                    f"Grad-CAM layer4, resnet50 b{batch}, × forward+input-gradient ({ms(base)})",
                    peers,
                    f"{times['fmapviz explicit'] / base:.2f}×",
                ]
            )
            if batch == 1:
                explicit["resnet50"] = times["fmapviz explicit"] / base, times["fmapviz default"] / base
        times = self._gradcam_case(self.mobilenet, "features.18", self.two_photos[:1].to(self.device), peers=False)
        base = times["floor"]
        explicit[f"mobilenet_v2 ({'real' if self.weights else 'random'} weights, a photo)"] = (
            times["fmapviz explicit"] / base,
            times["fmapviz default"] / base,
        )
        cells = [", ".join(f"{name} {pair[index]:.2f}×" for name, pair in explicit.items()) for index in (0, 1)]
        self.results.add(
            [
                "Grad-CAM default call `saliency(model, x, 'gradcam')` (layers=None) vs the explicit last "
                "layer, b1, × forward+input-gradient (target: default ≤ 0.6×)",
                "explicit: " + cells[0],
                "default: " + cells[1],
            ]
        )

    def _gradcam_case(self, model, layer: str, x: torch.Tensor, peers: bool = True) -> dict[str, float]:
        with torch.no_grad():
            classes = model(x).argmax(1)
        methods: dict[str, Callable[[], object]] = {
            "floor": self.floor(model, x, classes),
            "fmapviz explicit": lambda: fmapviz.saliency(model, x, "gradcam", layers=layer),
            "fmapviz default": lambda: fmapviz.saliency(model, x, "gradcam"),
        }
        if peers:
            methods.update(cam_peers(model, layer, x, classes))
        return self.time(methods, self.sizes.rounds, warmup=2)

    # 3. Integrated Gradients and SmoothGrad -----------------------------------------------------------------

    def input_methods(self) -> None:
        model, x, sizes = self.resnet50, self.randn(1), self.sizes
        with torch.no_grad():
            classes = model(x).argmax(1)
        target = int(classes[0])
        methods: dict[str, Callable[[], object]] = {
            "floor": self.floor(model, x, classes),
            "fmapviz ig": lambda: fmapviz.saliency(model, x, "integrated_gradients", steps=sizes.steps),
            "fmapviz smoothgrad": lambda: fmapviz.saliency(model, x, "smoothgrad", samples=sizes.samples),
        }
        captum = optional("captum.attr")
        if captum is not None:
            methods["captum ig"] = lambda: captum.IntegratedGradients(model).attribute(
                x, target=target, n_steps=sizes.steps
            )
            methods["captum smoothgrad"] = lambda: captum.NoiseTunnel(captum.Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=sizes.samples, target=target, abs=False
            )
        times = self.time(methods, sizes.slow_rounds)
        for label, key, peer in (
            (f"Integrated Gradients, {sizes.steps} steps, resnet50 b1", "ig", "captum IntegratedGradients default"),
            (f"SmoothGrad, {sizes.samples} samples, resnet50 b1", "smoothgrad", "captum NoiseTunnel(Saliency)"),
        ):
            ours = times[f"fmapviz {key}"]
            theirs = times.get(f"captum {key}")
            cell = f"{ms(ours)}" + (f" ({versus(ours, theirs)})" if theirs else "")
            self.results.add(
                [
                    f"{label}, default batch sizes (floor {ms(times['floor'])})",
                    f"{peer} {ms(theirs)}" if theirs else f"captum {MISSING}",
                    cell,
                ]
            )

    # TF32 -----------------------------------------------------------------------------------------------------

    def tf32(self) -> None:
        model, sizes = self.resnet50, self.sizes
        batch = sizes.cam_batches[-1]
        x, one = self.randn(batch), self.randn(1)
        with torch.no_grad():
            classes, one_class = model(x).argmax(1), model(one).argmax(1)
        work = {
            "floor": self.floor(model, x, classes),
            "gradcam": lambda: fmapviz.saliency(model, x, "gradcam", layers="layer4"),
            "ig floor": self.floor(model, one, one_class),
            "ig": lambda: fmapviz.saliency(model, one, "integrated_gradients", steps=sizes.steps),
        }
        methods = {(name, flag): with_tf32(flag, run) for name, run in work.items() for flag in (True, False)}
        times = self.time(methods, sizes.slow_rounds)

        def pair(name: str) -> str:
            return f"{ms(times[name, True])} / {ms(times[name, False])}"

        self.results.add(
            [
                f"cudnn.allow_tf32 True / False: Grad-CAM layer4, resnet50 b{batch}",
                f"forward+input-gradient {pair('floor')}",
                pair("gradcam"),
            ]
        )
        self.results.add(
            [
                f"cudnn.allow_tf32 True / False: Integrated Gradients {sizes.steps} steps, resnet50 b1",
                f"forward+input-gradient {pair('ig floor')}",
                pair("ig"),
            ]
        )

    # 4. Score-CAM --------------------------------------------------------------------------------------------

    def scorecam(self) -> None:
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval().to(self.device)
        x = self.two_photos[:1].to(self.device)
        with torch.no_grad():
            classes = model(x).argmax(1)
        methods: dict[str, Callable[[], object]] = {
            "fmapviz": lambda: fmapviz.saliency(model, x, "scorecam", target=classes, layers="layer4")
        }
        grad_cam = optional("pytorch_grad_cam")
        difference = "—"
        if grad_cam is not None:
            methods["peer"] = lambda: grad_cam_scorecam(grad_cam, model, x, classes)
            ours = fmapviz.saliency(model, x, "scorecam", target=classes, layers="layer4").maps[:, 0]
            difference = f"{max_difference(ours, torch.from_numpy(methods['peer']()), 'min_max'):.1e}"
        times = self.time(methods, self.sizes.scorecam_rounds)
        peer = f"pytorch-grad-cam ScoreCAM (its batch 64) {ms(times['peer'])}" if "peer" in times else ""
        peer = peer or f"pytorch-grad-cam {MISSING}"
        self.results.add(
            [
                f"Score-CAM layer4 (512 channels), resnet18 b1, a photo (maps scaled to [0, 1] differ by {difference})",
                peer,
                ms(times["fmapviz"]),
            ]
        )

    # 5. activation maximization -------------------------------------------------------------------------------

    def actmax(self) -> None:
        from actmax import LAYER, VIEW, reached  # the equal-work setting of benchmarks/actmax.py

        sizes = self.sizes
        channels, size, steps = sizes.actmax_channels, sizes.actmax_size, sizes.actmax_steps
        work = f"resnet18 {LAYER}, {channels} channels, {size} px, {steps} steps (as benchmarks/actmax.py)"
        torch.manual_seed(0)
        cpu_model = torchvision.models.resnet18(weights=None).eval()
        model = copy.deepcopy(cpu_model).to(self.device)

        def ours(count: int) -> torch.Tensor:
            return fmapviz.maximize(
                model, LAYER, channels=range(channels), size=size, steps=count, model_size=VIEW, progress=False
            ).images

        lucent, skipped = self._lucent(cpu_model, channels, size)
        finals: dict[str, torch.Tensor] = {}
        methods = {"ours": lambda: finals.__setitem__("ours", ours(steps).cpu())}
        ours(4)  # the warm-ups: 4 steps each
        if lucent is not None:
            lucent(4)
            methods["lucent"] = lambda: finals.__setitem__("lucent", lucent(steps))
        seconds = self.time(methods, rounds=1, warmup=0)  # one round each: the GPU time is scarce
        if lucent is None:
            self.results.add([f"activation maximization, {work}", f"torch-lucent {skipped}", ms(seconds["ours"])])
            return
        wins = []
        for align in (False, True):
            ours_value, lucent_value = (reached(cpu_model, finals[name], align) for name in ("ours", "lucent"))
            wins.append(f"{int((ours_value >= lucent_value).sum())}/{channels} (align_corners={align})")
        self.results.add(
            [
                f"activation maximization, {work}; objective: one clean forward of the final images",
                f"torch-lucent render_vis, one batch: {ms(seconds['lucent'])}",
                f"{ms(seconds['ours'])} ({versus(seconds['ours'], seconds['lucent'])}), objective ≥ lucent on "
                + ", ".join(wins),
            ]
        )

    def _lucent(self, cpu_model: torch.nn.Module, channels: int, size: int) -> tuple[Callable | None, str]:
        """lucent's batched render of the same channels, or None and why not."""
        from actmax import LAYER, StopAfterLayer3

        lucent_device = "cuda:0" if torch.cuda.is_available() else "cpu"
        ours = "cpu" if self.device.type == "cpu" else f"{self.device.type}:{self.device.index or 0}"
        if lucent_device != ours:
            return None, f"skipped: it always runs on {lucent_device} here"
        try:
            render, param, objectives = import_lucent()
        except Exception as error:
            return None, f"{MISSING} ({one_line(error)})"
        lucent_model = StopAfterLayer3(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]).eval()
        lucent_model.load_state_dict(cpu_model.state_dict())
        lucent_model.requires_grad_(False).to(self.device)  # frozen and cut after layer3, like fmapviz

        def run(steps: int) -> torch.Tensor:
            torch.manual_seed(0)
            objective = sum(objectives.channel(LAYER, c, batch=c) for c in range(channels))
            images = render.render_vis(
                lucent_model,
                objective,
                param_f=lambda: param.image(size, batch=channels, fft=True, decorrelate=True),
                thresholds=(steps,),
                show_image=False,
                progress=False,
            )
            return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float()

        return run, ""

    # 7. correctness and memory --------------------------------------------------------------------------------

    def correctness(self) -> None:
        cpu_model, x_cpu = self.loaded.model, self.two_photos
        on_cpu = self.device.type == "cpu"  # a smoke test: the one CPU call is both sides
        model, x = (cpu_model, x_cpu) if on_cpu else (self.mobilenet, x_cpu.to(self.device))
        flags = [parameter.requires_grad for parameter in model.parameters()]
        lighter = QUICK_OPTIONS if self.sizes.quick else LIGHT_OPTIONS
        for method, known in saliency_methods().items():
            options = {key: value for key, value in lighter.get(method, {}).items() if known is None or key in known}
            label = method + "".join(f" {key}={value}" for key, value in options.items())
            try:
                first = fmapviz.saliency(cpu_model, x_cpu, method, **options)
                reference = first.maps
            except Exception as error:
                self.results.add_check([label, f"CPU: {one_line(error)}", "", "", str(hooks_left(cpu_model)), ""])
                continue
            try:
                result = first if on_cpu else fmapviz.saliency(model, x, method, **options)
                exact = "—"
                if self.device.type == "cuda":
                    exact_maps = with_tf32(False, fmapviz.saliency)(model, x, method, **options).maps
                    exact = f"{max_difference(exact_maps, reference):.1e}"
                row = [
                    label,
                    f"{max_difference(result.maps, reference):.1e}",
                    exact,
                    str(result.maps.device.type == self.device.type),
                ]
            except Exception as error:
                row = [label, f"error: {one_line(error)}", "", ""]
            restored = [parameter.requires_grad for parameter in model.parameters()] == flags
            self.results.add_check(row + [str(hooks_left(model)), str(restored)])
            self.free()

    def memory(self) -> None:
        if self.device.type != "cuda":
            self.results.add(["CUDA memory around repeated Grad-CAM calls", "—", f"n/a on {self.device.type}"])
            return
        model, x, calls = self.mobilenet, self.two_photos.to(self.device), self.sizes.memory_calls
        fmapviz.saliency(model, x, "gradcam")
        self.free()
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        for _ in range(calls):
            fmapviz.saliency(model, x, "gradcam")
        self.free()
        torch.cuda.synchronize(self.device)
        after = torch.cuda.memory_allocated(self.device)
        self.results.add(
            [
                f"CUDA memory_allocated before / after {calls} Grad-CAM calls (mobilenet_v2, 2 photos, "
                "results dropped)",
                "pytorch-grad-cam's context-release test: after == before",
                f"{before / 2**20:.1f} / {after / 2**20:.1f} MiB (Δ {(after - before) / 2**20:+.2f})",
            ]
        )

    # 6. explorer (last: the longest) ------------------------------------------------------------------------------

    def explorer(self) -> None:
        photos = self.photos[: self.sizes.explorer_photos] if self.sizes.explorer_photos else self.photos
        loaded = fmapviz.load_model("mobilenet_v2", weights=self.weights, device=self.device)
        options, layers = {}, QUICK_EXPLORER_LAYERS if self.sizes.quick else EXPLORER_LAYERS
        if self.sizes.quick:
            from fmapviz.explorer import ExploreSettings

            tiny = dict(topk=2, crops=2, least=1, explain_top=1, actmax_top=1, actmax_copies=1, actmax_steps=4)
            options["settings"] = ExploreSettings(**tiny, actmax_size=32)
        with tempfile.TemporaryDirectory() as temporary:
            folder, site = Path(temporary) / "photos", Path(temporary) / "site"
            folder.mkdir()
            for path in photos:
                (folder / path.name).symlink_to(path.resolve())
            start = time.perf_counter()
            fmapviz.explore(loaded, folder, layers, site, progress=False, **options)
            if self.sync:
                self.sync()
            wall = time.perf_counter() - start
            stages = json.loads((site / "fmapviz-site.json").read_text()).get("seconds", {})
        settings = "tiny settings (--quick)" if self.sizes.quick else "default settings"
        weights = "real weights" if self.weights else "random weights"
        self.results.add(
            [
                f"explorer, mobilenet_v2 ({weights}) {' + '.join(layers)} over {len(photos)} "
                f"photos, {settings}, empty site (target ≤ 30 s)",
                "—",
                f"{ms(wall)}: " + ", ".join(f"{stage} {value:.1f} s" for stage, value in stages.items()),
            ]
        )


def capture_all(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with fmapviz.capture(model, "all") as maps:
        model(x)
    return maps


def clone_in_hook(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The plain correct way to capture every module: a forward hook on each that clones its tensor output."""
    maps: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str) -> Callable:
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                call = calls[name] = calls.get(name, 0) + 1
                maps[name if call == 1 else f"{name}#{call}"] = output.detach().clone()

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in model.named_modules() if name]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return maps


def cam_peers(model: torch.nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> dict[str, Callable]:
    """Grad-CAM of captum, torchcam and pytorch-grad-cam as a user calls them, upsampled to the input."""
    module, side, peers = model.get_submodule(layer), x.shape[-1], {}
    captum = optional("captum.attr")
    if captum is not None:
        peers["captum LayerGradCam + upsample"] = lambda: upsample(
            captum.LayerGradCam(model, module).attribute(x, target=classes, relu_attributions=True), side
        )
    torchcam = optional("torchcam.methods")
    if torchcam is not None:

        def torchcam_gradcam() -> torch.Tensor:
            with torchcam.GradCAM(model, layer) as extractor:
                return upsample(extractor(classes.tolist(), model(x))[0], side)

        peers["torchcam GradCAM + upsample"] = torchcam_gradcam
    grad_cam = optional("pytorch_grad_cam")
    if grad_cam is not None:

        def grad_cam_gradcam() -> object:
            with grad_cam.GradCAM(model=model, target_layers=[module]) as cam:
                return cam(input_tensor=x, targets=None)

        peers["pytorch-grad-cam GradCAM"] = grad_cam_gradcam
    return peers


def grad_cam_scorecam(grad_cam: types.ModuleType, model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with grad_cam.ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
        cam.batch_size = 64
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])


def import_lucent():
    """lucent through benchmarks/lucent_shim.py; IPython (lucent imports it for notebooks only) stubbed if absent."""
    from lucent_shim import import_lucent as shimmed

    try:
        import IPython.display  # noqa: F401
    except ImportError:
        stub = types.ModuleType("IPython")
        stub.display = types.ModuleType("IPython.display")
        sys.modules.update({"IPython": stub, "IPython.display": stub.display})
    return shimmed()


def with_tf32(allowed: bool, run: Callable) -> Callable:
    """``run`` with ``torch.backends.cudnn.allow_tf32`` set to ``allowed``, the caller's setting restored after."""

    def wrapped(*args: object, **kwargs: object) -> object:
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = allowed
        try:
            return run(*args, **kwargs)
        finally:
            torch.backends.cudnn.allow_tf32 = saved

    return wrapped


def saliency_methods() -> dict[str, set[str] | None]:
    """Method name -> its option names (None: unknown), from the saliency registry wherever it lives now."""
    for module in ("fmapviz.engines.saliency", "fmapviz.engines.saliency.registry"):
        registry = getattr(optional(module), "METHODS", None)
        if registry:
            return {name: set(getattr(entry, "options", None) or ()) or None for name, entry in registry.items()}
    return dict.fromkeys(KNOWN_METHODS)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160].replace("|", "\\|")


def header(device: torch.device) -> list[str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        where = f"**{name}** ({memory:.0f} GiB), CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        where = f"**{device}** (no GPU: a smoke test, not a measurement)"
    peers = ", ".join(
        f"{name} {version(name)}" for name in ("captum", "grad-cam", "torchcam", "torch-lucent", "kornia")
    )
    return [
        f"Device: {where}; torch {torch.__version__}, torchvision {torchvision.__version__}, fmapviz "
        f"{fmapviz.__version__}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
        f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} as found.",
        f"Peers: {peers}.",
        "One process; rows of one case timed round-robin (benchmarks/common.py), medians, a warm-up first, "
        "`torch.cuda.synchronize()` before and after every timed call. Models: torchvision, random weights seed 0, "
        "eval, 224 px (quick: 64 px), unless a row says real weights. Ratios are divided by the row's reference.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu (a smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and rounds; writes no results/gpu.md")
    parser.add_argument("--photos", type=Path, default=SHARED / "imagenet-samples", help="a folder of JPEG photos")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device (use --device cpu --quick for a smoke test)")
    photos = sorted(args.photos.glob("*.JPEG")) + sorted(args.photos.glob("*.jpg"))
    if len(photos) < 2:
        parser.error(f"--photos {args.photos}: needs at least 2 photos (*.JPEG or *.jpg)")
    sizes = QUICK if args.quick else FULL
    command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:])
    results = Results("fmapviz on a GPU beside its peers (issue 25)", command.strip(), header(device), not args.quick)
    print("\n".join(results.header), flush=True)
    started = time.perf_counter()
    bench = Bench(device, sizes, photos, results)
    user_tf32 = torch.backends.cudnn.allow_tf32
    for row in (
        bench.capture,
        bench.gradcam,
        bench.input_methods,
        bench.tf32,
        bench.scorecam,
        bench.actmax,
        bench.correctness,
        bench.memory,
        bench.explorer,
    ):
        section = time.perf_counter()
        try:
            row()
        except Exception as error:  # one failing row must not cost the others (GPU time is scarce)
            traceback.print_exc()
            results.add([f"{row.__name__}", "—", f"error: {one_line(error)}"])
        bench.free()
        print(f"-- {row.__name__}: {time.perf_counter() - section:.0f} s", flush=True)
    assert torch.backends.cudnn.allow_tf32 == user_tf32, "the TF32 setting was not restored"
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
