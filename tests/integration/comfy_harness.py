"""One real ComfyUI server per pytest session, shared by tests/integration and tests/ui.

pytest fixtures defined in two sibling conftest.py files are two fixtures, so a session fixture in each
would start two servers. Both conftests call `session_server()` instead, which starts the server the
first time and registers its shutdown with the pytest config, so every test gets the same one.

The pack is this repository, symlinked as custom_nodes/ComfyUI-HappyHorse into a temporary
--base-directory whose models/ tree (vae/, diffusion_models/, text_encoders/, ...) the tests fill.
COMFYUI_HOME (set by scripts/test.sh) must point at a tree made by scripts/setup_comfyui.sh.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest

from comfyui_server import ComfyUIServer
from happyhorse_core.testing.tiny_native_vaes import cached_vae_files

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "ComfyUI-HappyHorse"
CACHE = REPO / ".cache"
ARTIFACTS = CACHE / "artifacts"
TINY_WAN22_VAE = "tiny_wan22_vae.safetensors"
TINY_SAO_VAE = "tiny_stable_audio_vae.safetensors"

TIMINGS: dict[str, float] = {}          # name -> seconds, printed in the terminal summary
ARTIFACT_FILES: list[Path] = []         # screenshots etc., listed in the terminal summary
_STATE: dict[str, object] = {"server": None, "printed": False}


def comfy_home() -> Path:
    home = os.environ.get("COMFYUI_HOME")
    if not home:
        pytest.fail("COMFYUI_HOME is not set: run the suite with `bash scripts/test.sh` (it installs "
                    "ComfyUI and sets it), or run `bash scripts/setup_comfyui.sh` and "
                    "`export COMFYUI_HOME=$PWD/.cache/comfyui`.", pytrace=False)
    path = Path(home)
    if not (path / "launch.py").is_file() or not (path / "ComfyUI" / "main.py").is_file():
        pytest.fail(f"COMFYUI_HOME={home} is not a ComfyUI install made by scripts/setup_comfyui.sh "
                    f"(no launch.py / ComfyUI/main.py): run `bash scripts/setup_comfyui.sh {home}`.",
                    pytrace=False)
    return path


def run_check_script(script: Path, *args: str, label: str, timeout: int) -> dict:
    """Run a *_checks.py script in ComfyUI's own python (argv: COMFYUI_HOME, *args) and return the JSON object
    its last output line reports, {check name: "ok" | traceback}; its wall time goes into TIMINGS[label]."""
    home = comfy_home()
    python = home / "venv" / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"COMFYUI_HOME={home} has no venv/bin/python (ComfyUI's own python): run "
                    f"`bash scripts/setup_comfyui.sh {home}`.", pytrace=False)
    t0 = time.monotonic()
    proc = subprocess.run([str(python), str(script), str(home), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    TIMINGS[label] = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_script_tests(script: Path, checks: list[str], *, label: str, timeout: int, workdir: str = ""):
    """The fixture and two tests that drive a *_checks.py script (see in_comfy.py), for a test module to bind:
        results, test_script_runs_exactly_these_checks, test_x_check = check_script_tests(SCRIPT, CHECKS, ...)
    `results` runs the script once per module in ComfyUI's own python (with a fresh temporary folder as its
    argument when `workdir` names one); the first test asserts it ran exactly `checks`, the second, one test per
    name in `checks`, that the check reported "ok"."""
    @pytest.fixture(scope="module")
    def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
        args = [tmp_path_factory.mktemp(workdir)] if workdir else []
        return run_check_script(script, *args, label=label, timeout=timeout)

    def test_script_runs_exactly_these_checks(results):
        assert sorted(results) == sorted(checks)

    @pytest.mark.parametrize("name", checks)
    def test_check(results, name):
        assert results.get(name) == "ok", results.get(name)

    return results, test_script_runs_exactly_these_checks, test_check


def session_server(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> ComfyUIServer:
    """The session's ComfyUI server (started on first use, stopped when pytest finishes)."""
    srv = _STATE["server"]
    if srv is not None:
        return srv
    if _STATE.get("start_error"):                   # do not retry a failed start for every test
        pytest.fail(f"ComfyUI did not start earlier in this session: {_STATE['start_error']}", pytrace=False)
    home = comfy_home()
    base = tmp_path_factory.mktemp("comfy_base")
    srv = ComfyUIServer(home, custom_nodes={PACK_NAME: REPO}, base_dir=base)
    request.config.add_cleanup(srv.stop)
    try:
        srv.start()
    except Exception as e:
        _STATE["start_error"] = str(e)[-4000:]
        raise
    TIMINGS["server start (s)"] = srv.start_seconds
    _STATE["server"] = srv
    return srv


def place_file(src: Path, dst: Path) -> Path:
    """Put src at dst as a hard link (no copy, no symlink for path checks to trip on); copy across devices."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return dst
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def install_native_vaes(srv: ComfyUIServer) -> dict[str, str]:
    """Random-weight Wan2.2 and Stable Audio VAEs in models/vae; returns their VAELoader names."""
    t0 = time.monotonic()
    files = cached_vae_files(CACHE / "tiny_native")
    TIMINGS.setdefault("tiny VAE files ready (s)", time.monotonic() - t0)
    place_file(files["wan22"], srv.models_dir / "vae" / TINY_WAN22_VAE)
    place_file(files["stable_audio"], srv.models_dir / "vae" / TINY_SAO_VAE)
    return {"wan22": TINY_WAN22_VAE, "stable_audio": TINY_SAO_VAE}


def check_mp4(path, frames: int, width: int, height: int) -> None:
    """H.264 video at 25 fps with the given size and frame count, plus an AAC audio stream."""
    with av.open(str(path)) as box:
        video = box.streams.video[0]
        audio = box.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert video.average_rate == 25
        assert (video.codec_context.width, video.codec_context.height) == (width, height)
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == 44100
        decoded = sum(1 for _ in box.decode(video=0))
    assert decoded == frames


def artifact_path(sub: str, name: str) -> Path:
    """.cache/artifacts/<sub>/<name>, listed in the terminal summary."""
    out = ARTIFACTS / sub
    out.mkdir(parents=True, exist_ok=True)
    ARTIFACT_FILES.append(out / name)
    return out / name


def print_timings(terminalreporter) -> None:
    """Terminal-summary section with the harness timings and artifact paths (once, whichever conftest calls first)."""
    if _STATE["printed"] or not (TIMINGS or ARTIFACT_FILES):
        return
    _STATE["printed"] = True
    terminalreporter.section("ComfyUI harness timings and artifacts")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:<48} {seconds:8.2f}")
    for path in ARTIFACT_FILES:
        if path.exists():
            terminalreporter.write_line(f"artifact: {path}")
