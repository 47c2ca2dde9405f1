"""Import the pack the way ComfyUI does: the repository root as one package.

ComfyUI loads custom_nodes/<folder>/__init__.py as a package named after the folder (e.g.
ComfyUI-HappyHorse), so the node modules reach the core by relative imports
(`from ..happyhorse_core...`). Tests and in-ComfyUI check scripts load it the same way under a
valid alias; ComfyUI's own top-level `nodes` module is then never shadowed.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
ALIAS = "happyhorse_pack"


def load_pack(alias: str = ALIAS) -> ModuleType:
    """The repository root imported as package `alias` (once per process)."""
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    spec.loader.exec_module(package)
    return package


def pack_module(name: str, alias: str = ALIAS) -> ModuleType:
    """A module of the pack by its dotted path inside the repository, e.g. "nodes.comfy_bridge"."""
    load_pack(alias)
    return importlib.import_module(f"{alias}.{name}")
