"""Lower layers never import upper ones (STYLE rule 14): checked on the source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

import attnlab

PACKAGE = Path(attnlab.__file__).parent
# Each layer may import only from the layers listed for it (and from itself).
ALLOWED = {
    "masks": set(),
    "scores": set(),
    "core": {"masks", "scores"},
    "attention": {"masks", "scores", "core"},
    "data": set(),
    "seq": {"masks", "scores", "core", "attention"},
    "vision": {"masks", "scores", "core", "attention"},
    "train": {"masks", "scores", "core", "attention", "seq", "vision", "data"},
    "experiments": {"masks", "scores", "core", "attention", "seq", "vision", "data", "train"},
    # Plots read recorded weights and saved results: they know arrays, not models or training.
    "viz": set(),
    "report": {"viz"},
    "lab": {"masks", "scores", "core", "attention", "seq", "vision", "data", "train", "experiments", "viz", "report"},
}
for _allowed in ALLOWED.values():  # the eager/traced switch sits below every layer
    _allowed.add("tracing")
ALLOWED["tracing"] = set()
FORBIDDEN_EXTERNAL = {"matplotlib", "tqdm", "safetensors"}  # models never plot, print progress or touch files


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_layers(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for top-level modules
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
                if module.startswith("attnlab."):
                    internal.add(module.split(".")[1])
                else:
                    external.add(module.split(".")[0])
            else:
                up = node.level - 1
                if up >= depth:  # reaches the package root: "from ..core import x" or "from .. import masks"
                    if node.module:
                        internal.add(node.module.split(".")[0])
                    else:
                        internal.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("attnlab."):
                    internal.add(alias.name.split(".")[1])
                else:
                    external.add(alias.name.split(".")[0])
    return internal, external


def test_imports_only_go_down():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        if layer not in ALLOWED:
            continue
        internal, external = _imported_layers(path)
        for other in internal - ALLOWED[layer] - {layer}:
            problems.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {other}")
        if layer in {"masks", "scores", "core", "attention", "seq", "vision"}:
            for name in external & FORBIDDEN_EXTERNAL:
                problems.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {name}")
    assert not problems, "\n".join(problems)
