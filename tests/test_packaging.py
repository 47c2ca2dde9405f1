"""The pack as the Comfy Registry and a user's ComfyUI see it: metadata, license, dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_no_torch_in_runtime_dependencies():
    """ComfyUI owns torch: a pack that lists it can make pip replace a CUDA build with another."""
    deps = PYPROJECT["project"]["dependencies"] + (REPO / "requirements.txt").read_text().splitlines()
    assert not [d for d in deps if re.match(r"\s*torch(vision|audio)?\b", d)]
    assert any(d.startswith("torch") for d in PYPROJECT["project"]["optional-dependencies"]["test"])


def test_registry_fields():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert {"Operating System :: OS Independent", "Environment :: GPU :: NVIDIA CUDA"} <= set(project["classifiers"])
    assert project["license"] == {"file": "LICENSE"}
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    assert (REPO / "docs" / "icon.svg").is_file()
    for url in project["urls"].values():
        assert url.startswith("https://") and "<" not in url, url


def test_license_and_notice():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    notice = (REPO / "NOTICE").read_text()
    assert "daVinci-MagiHuman" in notice and "GAIR-NLP" in notice and "Apache" in notice


def test_a_node_search_for_magihuman_finds_the_pack():
    """ComfyUI's node search matches node ids and display names only."""
    names = re.findall(r'display_name="([^"]+)"', "".join(p.read_text() for p in (REPO / "nodes").glob("*.py")))
    assert sum("MagiHuman" in n for n in names) >= 2, names
