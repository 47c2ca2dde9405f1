"""Run a real ComfyUI server from the tests (stdlib only, so it works from the tests' own venv).

Expects a ComfyUI home made by scripts/setup_comfyui.sh (COMFYUI_HOME, default .cache/comfyui):
    HOME/venv/bin/python, HOME/ComfyUI/main.py, HOME/launch.py

    srv = ComfyUIServer(home, custom_nodes={"ComfyUI-HappyHorse": repo_root}, base_dir=tmp)
    srv.start()
    assert "SaveVideo" in srv.object_info()
    result = srv.run_prompt(api_graph)          # raises ComfyUIExecutionError on a node failure
    files = srv.output_files(result)            # absolute paths of saved outputs
    srv.stop()

The base directory (--base-directory) gets custom_nodes/ (packs symlinked in under the given folder
names), models/, input/, output/, temp/, user/ and the server log comfyui.log. Only the process this
object started is ever signalled (by its PID).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

DEFAULT_ARGS = (
    "--cpu",
    "--disable-auto-launch",
    "--database-url", "sqlite:///:memory:",
    "--disable-api-nodes",
    "--preview-method", "auto",  # latent previews on, as most installs run (ComfyUI's own default is none)
)
MODEL_SUBDIRS = ("vae", "diffusion_models", "text_encoders", "checkpoints", "loras")

PathLike = Union[str, os.PathLike]


class ComfyUIError(RuntimeError):
    pass


class ComfyUIValidationError(ComfyUIError):
    """POST /prompt was rejected (HTTP 400 or node_errors): unknown node type, bad input, ..."""

    def __init__(self, body: Any):
        self.body = body
        super().__init__(f"prompt rejected: {json.dumps(body)[:4000]}")


class ComfyUIExecutionError(ComfyUIError):
    """The prompt ran and a node raised (or it was interrupted); `.error` is ComfyUI's
    execution_error dict (node_id, node_type, exception_type, exception_message, traceback, ...)
    plus "event" ("execution_error" / "execution_interrupted")."""

    def __init__(self, error: dict, history: dict):
        self.error = error
        self.history = history
        if error.get("event") == "execution_interrupted":
            msg = "interrupted in node {} ({})".format(error.get("node_id"), error.get("node_type"))
        else:
            msg = "{} in node {} ({}): {}".format(
                error.get("exception_type"), error.get("node_id"), error.get("node_type"),
                error.get("exception_message"))
        super().__init__(msg)


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM the server when the test process dies, so a
    killed pytest (CI timeout, Ctrl-C twice) does not leave ComfyUI running."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyUIServer:
    def __init__(
        self,
        comfy_home: PathLike,
        custom_nodes: Union[Mapping[str, PathLike], Iterable[PathLike]] = (),
        base_dir: Optional[PathLike] = None,
        port: Optional[int] = None,
        extra_args: Iterable[str] = (),
        python: Optional[str] = None,
        env: Optional[dict] = None,
    ):
        self.home = Path(comfy_home).resolve()
        self.python = python or str(self.home / "venv" / "bin" / "python")
        self.launcher = self.home / "launch.py"
        if not self.launcher.exists() or not Path(self.python).exists():
            raise FileNotFoundError(
                f"{self.launcher} or {self.python} missing: run `bash scripts/setup_comfyui.sh {self.home}`")
        if isinstance(custom_nodes, Mapping):
            packs = {name: Path(p).resolve() for name, p in custom_nodes.items()}
        else:
            packs = {Path(p).resolve().name: Path(p).resolve() for p in custom_nodes}
        self.custom_nodes = packs
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="comfy_base_")).resolve()
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.client_id = uuid.uuid4().hex
        self.log_path = self.base_dir / "comfyui.log"
        self.start_seconds: Optional[float] = None
        self._log = None

    # ------------------------------------------------------------------ process
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def _prepare_base(self) -> None:
        cn = self.base_dir / "custom_nodes"
        cn.mkdir(parents=True, exist_ok=True)
        for name, src in self.custom_nodes.items():
            link = cn / name
            if link.is_symlink() or link.exists():
                if link.is_symlink() and link.resolve() == src:
                    continue
                raise FileExistsError(f"{link} already exists")
            link.symlink_to(src, target_is_directory=True)
        for sub in ("input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        for sub in MODEL_SUBDIRS:
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 240.0) -> "ComfyUIServer":
        if self.proc is not None:
            return self
        self._prepare_base()
        cmd = [self.python, str(self.launcher), *DEFAULT_ARGS,
               "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base_dir), *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):   # the server runs in ComfyUI's own venv
            env.pop(var, None)
        self._log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=str(self.home), env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.stop()
                raise ComfyUIError(f"ComfyUI exited with {rc}:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=5)
                self.start_seconds = time.monotonic() - t0
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        self.stop()
        raise ComfyUIError(f"ComfyUI not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGINT)  # ComfyUI exits cleanly on Ctrl-C
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """stop() and delete the base dir if this object created it."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ log
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def import_failures(self) -> list[str]:
        """Log lines in which ComfyUI reports a custom-node pack that failed to import."""
        pat = re.compile(r"IMPORT FAILED|Cannot import .* module for custom nodes")
        return [line for line in self.log_text().splitlines() if pat.search(line)]

    # ------------------------------------------------------------------ http
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def get_json(self, path: str, timeout: float = 60):
        return self._request("GET", path, timeout=timeout)

    def post_json(self, path: str, body: Any, timeout: float = 60):
        return self._request("POST", path, body, timeout=timeout)

    def object_info(self, node_type: Optional[str] = None) -> dict:
        if node_type:
            return self.get_json("/object_info/" + urllib.parse.quote(node_type))
        return self.get_json("/object_info")

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

    # ------------------------------------------------------------------ prompts
    def queue_prompt(self, prompt: dict, extra_data: Optional[dict] = None) -> str:
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            resp = self.post_json("/prompt", body)
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = payload.decode(errors="replace")
            raise ComfyUIValidationError(payload) from None
        if resp.get("node_errors"):
            raise ComfyUIValidationError(resp)
        return resp["prompt_id"]

    def wait_for(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyUIError(f"ComfyUI died (rc={self.proc.returncode}):\n{self.log_tail()}")
            hist = self.get_json(f"/history/{prompt_id}")
            entry = hist.get(prompt_id) if hist else None
            if entry:  # ComfyUI writes the history entry only once the prompt has finished
                return entry
            time.sleep(poll)
        try:
            self.interrupt()
        finally:
            raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s")

    def run_prompt(self, prompt: dict, timeout: float = 600.0, raise_on_error: bool = True,
                   extra_data: Optional[dict] = None) -> dict:
        """Queue an API-format prompt and wait. Returns {"prompt_id", "status": "success"|"error",
        "outputs": {node_id: {...}}, "error": dict|None, "seconds": wall time}."""
        t0 = time.monotonic()
        pid = self.queue_prompt(prompt, extra_data)
        entry = self.wait_for(pid, timeout=timeout)
        status = entry.get("status", {})
        error = None
        for ev, data in status.get("messages", []):
            if ev in ("execution_error", "execution_interrupted"):
                error = dict(data, event=ev)
        result = {"prompt_id": pid, "status": status.get("status_str"),
                  "outputs": entry.get("outputs", {}), "error": error,
                  "seconds": time.monotonic() - t0}
        if error and raise_on_error:
            raise ComfyUIExecutionError(error, entry)
        return result

    def output_files(self, result: dict) -> list[Path]:
        """Absolute paths of every file listed in the outputs (images/audio/video/gifs...)."""
        roots = {"output": self.base_dir / "output", "temp": self.base_dir / "temp",
                 "input": self.base_dir / "input"}
        files = []
        for node_out in result["outputs"].values():
            for items in node_out.values():
                if not isinstance(items, list):
                    continue
                for it in items:
                    if isinstance(it, dict) and "filename" in it:
                        root = roots.get(it.get("type", "output"), roots["output"])
                        files.append(root / it.get("subfolder", "") / it["filename"])
        return files
