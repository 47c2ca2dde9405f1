"""docs/ARCHITECTURE.md stays true: every module it names exists, every module of the pack is named, and every
`MODEL_SPEC §n` / `WEIGHT_LAYOUTS §n` the code cites is a section of the docs/ file of that name."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _named() -> set[str]:
    return set(re.findall(r"`((?:happyhorse_core|nodes)/[\w/]+\.py)`", (DOCS / "ARCHITECTURE.md").read_text()))


def _modules() -> set[str]:
    return {p.relative_to(REPO).as_posix() for folder in ("happyhorse_core", "nodes")
            for p in (REPO / folder).rglob("*.py") if p.name != "__init__.py"}


def test_every_named_module_exists():
    assert sorted(m for m in _named() if not (REPO / m).is_file()) == []


def test_every_module_is_named():
    assert sorted(_modules() - _named()) == []


def _sections(doc: str) -> set[str]:
    """Section numbers of a spec: '## 4. Sampling' -> '4', '### 4.5 Super-resolution' -> '4.5'."""
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (DOCS / doc).read_text(), re.M))


def test_spec_references_resolve():
    refs = []
    for path in sorted((REPO / "happyhorse_core").rglob("*.py")) + sorted((REPO / "nodes").rglob("*.py")):
        for doc, nums in re.findall(r"(MODEL_SPEC|WEIGHT_LAYOUTS)(?:\.md)? (§[\d.,§ \-]+\d)", path.read_text()):
            for num in re.findall(r"\d+(?:\.\d+)?", nums):
                refs.append((path.name, doc, num))
    assert len(refs) > 20
    sections = {doc: _sections(f"{doc}.md") for doc in ("MODEL_SPEC", "WEIGHT_LAYOUTS")}
    assert [r for r in refs if r[2] not in sections[r[1]]] == []
