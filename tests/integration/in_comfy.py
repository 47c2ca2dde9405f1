"""Shared start-up and reporting for the *_checks.py scripts that run INSIDE ComfyUI's python (no server).

A script calls start_comfy(HOME) before it imports comfy or torch, registers its checks with @check, and
ends with report(): one JSON object {check name: "ok" | traceback} on stdout, which the pytest file that
drives it (through comfy_harness.check_script_tests) asserts on. Every check runs even when an earlier one fails.
"""
from __future__ import annotations

import contextlib
import json
import runpy
import sys
import traceback
from pathlib import Path
from typing import Callable, ContextManager, Iterable

REPO = Path(__file__).resolve().parents[2]
CHECKS: dict[str, Callable[[], None]] = {}
_LAUNCH: dict = {}  # launch.py's globals, kept alive: they hold the torchvision op library


def start_comfy(home: Path) -> None:
    """Set up ComfyUI's python as its server would, on the CPU: launch.py's torchvision op declarations,
    ComfyUI and tests/ (pack_import: the pack as one package, as ComfyUI loads it) importable, --cpu on."""
    _LAUNCH.update(runpy.run_path(str(home / "launch.py"), run_name="launch"))
    _LAUNCH["_declare_torchvision_ops"]()
    sys.path.insert(0, str(home / "ComfyUI"))
    sys.path.insert(0, str(REPO / "tests"))
    import comfy.cli_args
    comfy.cli_args.args.cpu = True


def check(fn: Callable[[], None]) -> Callable[[], None]:
    """Register `fn` as a check under its function name."""
    CHECKS[fn.__name__] = fn
    return fn


def report(only: Iterable[str] = (), around: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
    """Run the registered checks (only those named in `only`, when given), each inside a fresh `around()`
    context (e.g. torch.inference_mode, as ComfyUI runs nodes), and print the JSON results."""
    only = set(only)
    results = {}
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        try:
            with around():
                fn()
            results[name] = "ok"
        except Exception:  # report every check, not just the first failure
            results[name] = traceback.format_exc()
    print(json.dumps(results))
