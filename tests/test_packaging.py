"""What a built distribution carries: one version, the license (SPDX expression and file) and the py.typed marker."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import attnlab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(attnlab.__file__).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_version_source():
    assert attnlab.__version__ == importlib.metadata.version("attnlab")
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "attnlab.__version__"}
    # A plain string literal: setuptools then reads it from the source (ast) and never imports attnlab (nor torch)
    # to build; anything computed would make every build import the package.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    literals = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]  # fmt: skip
    assert literals == [attnlab.__version__]
    if importlib.util.find_spec("setuptools") is not None:  # what the build backend does, with torch unimportable
        read = ("import sys; sys.modules['torch'] = None; from setuptools.config.expand import read_attr; "
                "print(read_attr('attnlab.__version__', {'': 'src'}, sys.argv[1]))")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", read, str(ROOT)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == attnlab.__version__, done.stderr


def test_license_and_typing_marker_are_declared():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c)" in text and "the attnlab authors" in text
    assert (PACKAGE / "py.typed").is_file() and "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["attnlab"]
    assert importlib.metadata.metadata("attnlab")["License-Expression"] == "MIT"


def _setuptools_major() -> int:
    spec = importlib.util.find_spec("setuptools")
    return int(importlib.metadata.version("setuptools").split(".")[0]) if spec else 0


@pytest.mark.skipif(_setuptools_major() < 77, reason="building offline needs setuptools >= 77 installed")
def test_the_wheel_ships_py_typed_and_the_license(tmp_path):
    # Built from a copy, offline (no build isolation), so the checkout gets no build/ folder.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
               str(tmp_path / "dist"), str(source)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("attnlab-*.whl")
    assert wheel.name.startswith(f"attnlab-{attnlab.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"attnlab-{attnlab.__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
    assert {"attnlab/py.typed", "attnlab/__main__.py", f"{info}/licenses/LICENSE"} <= names
    assert "License-Expression: MIT" in metadata.splitlines() and "License-File: LICENSE" in metadata.splitlines()
    assert f"Version: {attnlab.__version__}" in metadata.splitlines()
