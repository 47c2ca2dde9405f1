"""A minimal websocket reader for ComfyUI's /ws (stdlib only), so tests can wait for a node's progress.

ComfyUI pushes JSON events to the client id that queued a prompt: "executing", "progress"
({"value", "max", "node", "prompt_id"}), "execution_interrupted", ... Binary frames (latent previews,
progress text) are kept in `binary` as (event type, payload) while JSON events are read: type 1 is a
preview image (4-byte image format + JPEG/PNG bytes), type 3 a progress text (4-byte node-id length,
node id, UTF-8 text). Only what the tests need: connect, read events with a timeout, close.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Callable, Optional

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
PREVIEW_IMAGE, PROGRESS_TEXT = 1, 3  # ComfyUI's BinaryEventTypes


class ComfyWS:
    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status, _, self._buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {status[:200]!r}")
        self.binary: list[tuple[int, bytes]] = []  # (event type, payload) of every binary frame seen

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed by the server")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)  # client frames must be masked
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else None
        data = self._read(length)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return b0 & 0x0F, data

    def next_event(self, timeout: float) -> Optional[dict]:
        """The next JSON event, or None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                opcode, data = self._frame()
            except socket.timeout:
                return None
            if opcode == OP_TEXT:
                return json.loads(data)
            if opcode == OP_BINARY and len(data) >= 4:
                self.binary.append((struct.unpack(">I", data[:4])[0], data[4:]))
            if opcode == OP_PING:
                self._send(OP_PONG, data[:125])
            elif opcode == OP_CLOSE:
                raise ConnectionError("websocket closed by the server")

    def wait_for(self, match: Callable[[dict], bool], timeout: float) -> Optional[dict]:
        """The first event for which match(event) is true, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.next_event(left)
            if event is not None and match(event):
                return event
        return None

    def progress_texts(self) -> list[tuple[str, str]]:
        """(node id, text) of every progress-text frame seen so far."""
        out = []
        for kind, payload in self.binary:
            if kind == PROGRESS_TEXT:
                n = struct.unpack(">I", payload[:4])[0]
                out.append((payload[4:4 + n].decode(), payload[4 + n:].decode(errors="replace")))
        return out

    def preview_images(self) -> list[bytes]:
        """Image bytes (JPEG/PNG) of every preview frame seen so far."""
        return [payload[4:] for kind, payload in self.binary if kind == PREVIEW_IMAGE]

    def close(self) -> None:
        try:
            self._send(OP_CLOSE)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "ComfyWS":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
