"""Shared pytest fixtures: where the golden data lives, tiny seeded tensors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HAPPYHORSE_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}; set HAPPYHORSE_SHARED to the shared/ folder")
    return GOLDEN


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
