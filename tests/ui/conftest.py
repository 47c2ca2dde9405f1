"""Fixtures for the headless-Chromium UI tests: the session's ComfyUI server (shared with
tests/integration through comfy_harness) and a runner for ui_smoke.mjs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from comfy_harness import install_native_vaes, print_timings, session_server  # noqa: E402
from comfyui_server import ComfyUIServer  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def comfy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ComfyUIServer:
    return session_server(request, tmp_path_factory)


@pytest.fixture(scope="session")
def native_vaes(comfy: ComfyUIServer) -> dict[str, str]:
    return install_native_vaes(comfy)


class UISmoke:
    """Runs tests/ui/ui_smoke.mjs against the session server; returns its JSON summary."""

    def __init__(self, url: str, pw_dir: str):
        self.url = url
        self.pw_dir = pw_dir

    def run(self, workflow: Path, expect_nodes: list[str], screenshot: Path | None = None,
            dump_prompt: Path | None = None, expect_missing: bool = False, timeout: float = 180) -> dict:
        cmd = ["node", str(HERE / "ui_smoke.mjs"), "--url", self.url, "--workflow", str(workflow)]
        for node in expect_nodes:
            cmd += ["--expect-node", node]
        if screenshot is not None:
            cmd += ["--screenshot", str(screenshot)]
        if dump_prompt is not None:
            cmd += ["--dump-prompt", str(dump_prompt)]
        if expect_missing:
            cmd.append("--expect-missing")
        env = dict(os.environ, PW_DIR=self.pw_dir, CHROMIUM=CHROMIUM)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 2 or not lines:
            pytest.fail(f"ui_smoke.mjs could not run (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        summary = json.loads(lines[-1])
        summary["returncode"] = proc.returncode
        return summary


@pytest.fixture(scope="session")
def ui_smoke(comfy: ComfyUIServer) -> UISmoke:
    pw_dir = os.environ.get("PW_DIR")
    if not pw_dir:
        pytest.fail("PW_DIR is not set: run the suite with `bash scripts/test.sh`, or run "
                    "`bash scripts/setup_ui.sh` and `export PW_DIR=$PWD/.cache/ui-smoke`.", pytrace=False)
    if not (Path(pw_dir) / "node_modules" / "playwright-core").is_dir():
        pytest.fail(f"playwright-core not installed in PW_DIR={pw_dir}: run `bash scripts/setup_ui.sh {pw_dir}`.",
                    pytrace=False)
    if shutil.which("node") is None or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"node or {CHROMIUM} missing: run `bash scripts/setup_ui.sh`.", pytrace=False)
    return UISmoke(comfy.url, pw_dir)


def pytest_terminal_summary(terminalreporter):
    print_timings(terminalreporter)
