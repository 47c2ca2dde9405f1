"""Shared pytest fixtures: where the golden data lives, tiny seeded tensors; no network for the whole suite."""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HAPPYHORSE_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():  # a fresh clone has no shared/ folder beside it: these parity tests cannot run
        pytest.skip(f"golden data not found at {GOLDEN}; set HAPPYHORSE_SHARED to the shared/ folder that holds "
                    "golden/ to run the reference-parity tests")
    return GOLDEN


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# -- no network -------------------------------------------------------------------------------------------------
# Nothing in the project may touch the network (weights come from local files only). Every test runs with
# socket connects limited to loopback (127.0.0.0/8, ::1, "localhost") and AF_UNIX, so the ComfyUI server
# the integration tests start on 127.0.0.1 still works while a stray download fails at once. This guards
# the pytest process only; subprocesses (the ComfyUI server, the CLI tests) are not patched.

def _is_local(family: int, address) -> bool:
    if family == getattr(socket, "AF_UNIX", object()):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or not address:
        return False
    host = str(address[0]).split("%")[0]  # drop an IPv6 zone id
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost", ""):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # any other host name: refused without a DNS lookup
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _refuse(address) -> OSError:
    return ConnectionRefusedError(f"network access is disabled in the tests (connect to {address!r} refused by "
                                  "tests/conftest.py); only loopback and unix sockets are allowed")


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """Patch socket connects for the whole session (see the comment above)."""
    connect, connect_ex, create_connection = socket.socket.connect, socket.socket.connect_ex, socket.create_connection

    def guarded_connect(self, address):
        if not _is_local(self.family, address):
            raise _refuse(address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        if not _is_local(self.family, address):
            raise _refuse(address)
        return connect_ex(self, address)

    def guarded_create_connection(address, *args, **kwargs):
        family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        if not _is_local(family, address):
            raise _refuse(address)
        return create_connection(address, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        mp.setattr(socket, "create_connection", guarded_create_connection)
        yield
