"""Fixtures for tests against a real ComfyUI server (see comfy_harness.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_harness import install_native_vaes, print_timings, session_server  # noqa: E402
from comfyui_server import ComfyUIServer  # noqa: E402


@pytest.fixture(scope="session")
def comfy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ComfyUIServer:
    """The session's ComfyUI server with this repo loaded as the ComfyUI-HappyHorse pack."""
    return session_server(request, tmp_path_factory)


@pytest.fixture(scope="session")
def native_vaes(comfy: ComfyUIServer) -> dict[str, str]:
    """VAELoader names of the random-weight Wan2.2 / Stable Audio VAEs placed in models/vae."""
    return install_native_vaes(comfy)


def pytest_terminal_summary(terminalreporter):
    print_timings(terminalreporter)
