"""docs/TROUBLESHOOTING.md quotes real messages: every quoted fragment must exist in the code's string literals.

A quote in the first column of a table is split at `…` (where a value goes); each remaining fragment of four or
more characters must be part of some string literal in happyhorse_core/ or nodes/. So a message reworded in the
code fails here until the table is updated too.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "TROUBLESHOOTING.md"


def _literal_pieces() -> list[str]:
    pieces = []
    for folder in ("happyhorse_core", "nodes"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    pieces.append(node.value)
    return pieces


def _quoted_messages() -> list[str]:
    out = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| ") or line.startswith(("| Message", "| What you see", "|---")):
            continue
        first_cell = re.split(r"(?<!\\)\|", line)[1]
        out += [q.replace("\\|", "|") for q in re.findall(r"`([^`]+)`", first_cell)]
    return out


def test_doc_has_all_groups():
    text = DOC.read_text()
    for group in ("Files", "Sizes", "Text", "Media", "Graph", "Memory", "Cancel"):
        assert re.search(rf"^## {group}", text, re.M), group


def test_every_quoted_message_is_in_the_code():
    pieces = _literal_pieces()
    quotes = _quoted_messages()
    assert len(quotes) >= 60
    missing = []
    for quote in quotes:
        for fragment in (f.strip() for f in quote.split("…")):
            if len(fragment) >= 4 and not any(fragment in p for p in pieces):
                missing.append((quote, fragment))
    assert missing == []
