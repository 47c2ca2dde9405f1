"""Pure parts of nodes/comfy_bridge.py (model-path confinement) and the one-comfy-importer rule: no ComfyUI
needed. The layout conversions (nodes/comfy_layouts.py) are tested in test_comfy_layouts.py."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from pack_import import pack_module

cb = pack_module("nodes.comfy_bridge")
COMFY_MODULES = {"comfy", "folder_paths", "comfy_api", "comfy_extras", "server", "nodes", "execution"}


def _imported(tree: ast.AST) -> set[str]:
    """Top-level names of the absolute imports anywhere in a module (relative imports give "")."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0:
            out.add((n.module or "").split(".")[0])
    return out


def test_comfy_is_imported_lazily():
    """The bridge imports comfy only inside functions (so it imports without ComfyUI)."""
    tree = ast.parse(Path(cb.__file__).read_text())
    top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    assert not _imported(top) & COMFY_MODULES


# comfy_bridge is the one adapter for ComfyUI's API; the native MODEL adapters subclass ComfyUI's own classes
# (BaseModel, ModelPatcher, CFGGuider, KSAMPLER) and read its LoRA/sampling internals, so they import ComfyUI
# inside their functions too. Every other node module reaches ComfyUI through comfy_bridge.
FUNCTION_LEVEL_ADAPTERS = {"comfy_bridge.py", "native_model.py", "native_sampling.py", "native_lora.py"}


def test_bridge_is_the_only_comfy_importer():
    """No node module imports ComfyUI at module level (`io` comes from comfy_bridge); only the named adapters
    import it inside functions; the core is always imported relatively (the pack is one package)."""
    root = Path(cb.__file__).resolve().parents[1]
    for path in [root / "__init__.py", *sorted((root / "nodes").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        assert not _imported(top) & (COMFY_MODULES | {"happyhorse_core"}), path.name
        anywhere = _imported(tree)
        assert "happyhorse_core" not in anywhere, path.name
        if path.name not in FUNCTION_LEVEL_ADAPTERS:
            assert not anywhere & COMFY_MODULES, (path.name, anywhere & COMFY_MODULES)
    assert "sys.path" not in (root / "__init__.py").read_text()


@pytest.fixture
def roots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "happyhorse").mkdir(parents=True)
    b.mkdir()
    (a / "happyhorse" / "dit.safetensors").write_bytes(b"x")
    (b / "te.safetensors").write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    (a / "escape.safetensors").symlink_to(tmp_path / "secret.safetensors")  # link out of the roots: followed
    (a / "inside.safetensors").symlink_to(b / "te.safetensors")     # link into another root
    return [str(a), str(b)]


def test_resolve_in_roots_finds_files_in_any_root_and_keeps_link_paths(roots):
    assert cb.resolve_in_roots("happyhorse/dit.safetensors", roots) == os.path.join(roots[0], "happyhorse",
                                                                                     "dit.safetensors")
    assert cb.resolve_in_roots("te.safetensors", roots) == os.path.join(roots[1], "te.safetensors")
    assert cb.resolve_in_roots("inside.safetensors", roots) == os.path.join(roots[0], "inside.safetensors")
    # as ComfyUI core: a link's target is the user's choice (another disk, the Hugging Face cache)
    assert cb.resolve_in_roots("escape.safetensors", roots) == os.path.join(roots[0], "escape.safetensors")


@pytest.mark.badinput
@pytest.mark.parametrize("name,match", [
    ("../secret.safetensors", r"contains '\.\.'"),
    ("happyhorse/../../secret.safetensors", r"contains '\.\.'"),
    ("..\\secret.safetensors", r"contains '\.\.'"),
    ("/etc/passwd", "absolute path"),
    ("C:\\models\\x.safetensors", "absolute path"),
    ("", "empty model file name"),
    ("../happyhorse/ (sharded)", r"contains '\.\.'"),
])
def test_resolve_in_roots_rejects_names_that_climb_out(roots, name, match):
    with pytest.raises(ValueError, match=match):
        cb.resolve_in_roots(name, roots, "diffusion_models")


@pytest.mark.badinput
def test_resolve_in_roots_missing_file(roots):
    with pytest.raises(FileNotFoundError, match="not found in the vae folders"):
        cb.resolve_in_roots("nope.safetensors", roots, "vae")


@pytest.mark.badinput
def test_resolve_in_roots_names_a_dangling_link(roots, tmp_path):
    (Path(roots[0]) / "half.safetensors").symlink_to(tmp_path / "still_downloading.safetensors")
    with pytest.raises(FileNotFoundError, match="is a broken link: it points to .*still_downloading"):
        cb.resolve_in_roots("half.safetensors", roots, "vae")


def test_resolve_in_roots_follows_a_linked_folder(roots, tmp_path):
    """models/vae/shared -> /elsewhere: files in it load (ComfyUI lists them too)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "w.safetensors").write_bytes(b"x")
    (Path(roots[0]) / "shared").symlink_to(outside, target_is_directory=True)
    assert cb.resolve_in_roots("shared/w.safetensors", roots, "vae") == os.path.join(roots[0], "shared",
                                                                                     "w.safetensors")


@pytest.mark.badinput
@pytest.mark.parametrize("name", ["dit\x00.safetensors", "happyhorse", "./../secret.safetensors"])
def test_resolve_in_roots_odd_names(roots, name):
    """A NUL byte or a folder name is simply not a model file; './..' is still '..'."""
    err = FileNotFoundError if ".." not in name else ValueError
    with pytest.raises(err):
        cb.resolve_in_roots(name, roots, "diffusion_models")
