"""Every tensor the engines and hooks create names its device.

A tensor made without ``device=`` lands on the CPU; next to a model on the GPU that is the usual device bug
(``kernel_shap`` crashed on CUDA with "Expected all tensors to be on the same device" for this reason), and CI
has no GPU to catch it. So this test reads every module under ``fmapviz/engines/``, ``fmapviz/hooks/`` and
``fmapviz/memory.py`` with :mod:`ast` and fails, listing ``file:line``, on each call of a torch tensor factory
(``torch.zeros``, ``torch.arange``, ``torch.tensor``, ...; the ``*_like`` forms take their input's device)
that neither passes ``device=`` nor is moved at once (``torch.arange(n).to(x)``, also after casts such as
``.float().to(...)``). A call meant for the CPU says so with a trailing comment ``# cpu: <reason>`` on one of
its lines (a draw from a CPU generator that is then moved, a table of constants kept on the CPU).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [*sorted((ROOT / "fmapviz" / "engines").rglob("*.py")), *sorted((ROOT / "fmapviz" / "hooks").rglob("*.py"))]
SCANNED.append(ROOT / "fmapviz" / "memory.py")
FACTORIES = {
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "linspace", "logspace",
    "eye", "tensor", "as_tensor", "empty_strided", "tril_indices", "triu_indices",
}  # fmt: skip
MOVES = {"to", "cuda", "type_as", "tolist", "item"}  # a call of one of these puts it on a device (or in Python)
KEEPS = {"float", "double", "half", "long", "int", "bool", "round", "view", "reshape", "expand", "flatten", "t"}
GATHERS = {"stack", "cat"}  # torch.stack([torch.randint(..., generator=g) for g in generators]).to(device)
ALLOW = "# cpu:"
# files being fixed elsewhere at the time this test was written; each may hold at most this many unmarked calls
PENDING: dict[str, int] = {}


def _factory(node: ast.AST) -> str | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
        and node.func.attr in FACTORIES
    ):
        return node.func.attr
    return None


def _moved(node: ast.Call, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether the tensor ``node`` makes is moved by a ``.to(...)``-like call, possibly after casts and views,
    or after ``torch.stack``/``torch.cat`` of a list of such tensors."""
    current: ast.AST = node
    while isinstance(parents.get(current), (ast.List, ast.Tuple, ast.ListComp, ast.GeneratorExp)):
        current = parents[current]
    gather = parents.get(current)
    if current is not node and isinstance(gather, ast.Call) and gather.args and gather.args[0] is current:
        if isinstance(gather.func, ast.Attribute) and gather.func.attr in GATHERS:
            current = gather
    while True:
        attribute = parents.get(current)
        call = parents.get(attribute) if attribute is not None else None
        if not (isinstance(attribute, ast.Attribute) and isinstance(call, ast.Call) and call.func is attribute):
            return False
        if attribute.attr in MOVES:
            return True
        if attribute.attr not in KEEPS:
            return False
        current = call


def offenders(path: Path) -> list[str]:
    """``file:line torch.NAME(...)`` for each factory call in ``path`` without a device, a move or a mark."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        name = _factory(node)
        if name is None or any(keyword.arg == "device" for keyword in node.keywords):
            continue
        if _moved(node, parents):
            continue
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        if above.startswith(ALLOW) or any(ALLOW in line for line in lines[node.lineno - 1 : node.end_lineno]):
            continue
        found.append((node.lineno, f"{_shown(path)}:{node.lineno} torch.{name}(...)"))
    return [entry for _, entry in sorted(found)]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def test_the_scanner_finds_what_it_should_and_nothing_else(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import torch\n"
        "a = torch.zeros(3)\n"  # found
        "b = torch.zeros(3, device=x.device)\n"
        "c = torch.arange(4).to(x)\n"
        "d = torch.arange(4).float().view(2, 2).to(x.device)\n"
        "e = torch.randn(2, generator=g)  # cpu: drawn on the CPU generator, moved by the caller\n"
        "f = torch.zeros_like(x)\n"
        "g = torch.tensor([1.0]).sum()\n"  # found: .sum() keeps it on the CPU
        "h = torch.linspace(\n    0, 1, 5\n)\n"  # found, on its first line
        "i = torch.stack([torch.randint(3, (2,), generator=g) for g in gs]).to(x.device)\n"
        "j = torch.stack([torch.randint(3, (2,), generator=g) for g in gs])\n"  # found: the stack stays on the CPU
        "# cpu: a table of constants, moved where it is used\n"
        "k = torch.tensor([1.0, 2.0])\n"
        "n = torch.linspace(0, 9, 4).round().long().tolist()\n"
    )
    found = offenders(sample)
    assert [entry.split(":", 1)[1] for entry in found] == [
        "2 torch.zeros(...)",
        "8 torch.tensor(...)",
        "9 torch.linspace(...)",
        "13 torch.randint(...)",
    ]


def test_every_tensor_factory_in_the_engines_and_hooks_names_its_device():
    assert len(SCANNED) > 40  # the folders are there and read
    found = [entry for path in SCANNED for entry in offenders(path)]
    unexpected = []
    for path in sorted({entry.split(":")[0] for entry in found}):
        entries = [entry for entry in found if entry.startswith(path + ":")]
        if len(entries) > PENDING.get(path, 0):
            unexpected += entries
    assert not unexpected, (
        "tensor factories without device= (pass device=..., move with .to(...), or mark '# cpu: <reason>'):\n"
        + "\n".join(unexpected)
    )
