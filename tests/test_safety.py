"""Safety on a shared server: no pickle ever runs, no network, no file outside the model folders, no half files.

(a) A malicious pickle (its __reduce__ would create a marker folder) given to every loader, under
    its own name and disguised as .safetensors, is refused and the marker never appears; the one
    pickle reader (the Turbo-VAED converter, torch.load(weights_only=True)) refuses it too; no
    other code in the package can unpickle (AST scan for torch.load / pickle.load / eval ...).
(b) The suite runs with the network blocked (tests/conftest.py): non-loopback connects fail.
(c) Every model-file widget of the nodes goes through comfy_bridge.model_path (confined to the
    model folders, see test_comfy_bridge_pure.py), and the node files never write files
    themselves (saving is ComfyUI's native SaveVideo).
(d) What the package writes appears whole or not at all (temporary file + rename).
"""
from __future__ import annotations

import ast
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch

from happyhorse_core.tools.convert_ckpt import convert_checkpoint
from happyhorse_core.decoders.turbo_loading import load_turbo_vaed
from happyhorse_core.weights.loading import load_dit
from happyhorse_core.weights.safetensors_io import write_safetensors_stream
from happyhorse_core.text import load_encoder, load_text_stack
from happyhorse_core.testing.tiny_text import write_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("happyhorse_core", "nodes")


class Evil:
    """Unpickling this runs os.mkdir(marker)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _payload(marker: Path) -> dict:
    return {"state_dict": {"adapter.video_embedder.weight": torch.zeros(2, 2)}, "x": Evil(str(marker))}


def _write_evil(path: Path, marker: Path, fmt: str) -> Path:
    """fmt: zip (torch.save default), legacy (torch.save old format), raw2 / raw0 (plain pickle protocols)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        torch.save(_payload(marker), path)
    elif fmt == "legacy":
        torch.save(_payload(marker), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(_payload(marker), protocol=int(fmt[-1])))
    return path


def _tokenized_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_tokenizer(folder)
    return folder


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw2", "raw0"])
def test_the_payload_is_live(tmp_path, fmt):
    """Control: unpickled the unsafe way, each test file really runs its code (so the refusals below mean something)."""
    marker = tmp_path / "PWNED"
    path = _write_evil(tmp_path / "evil.pt", marker, fmt)
    if fmt.startswith("raw"):
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.is_dir()


LOADERS = {
    "load_dit": lambda p: load_dit(p, variant="distill"),
    "load_encoder": load_encoder,
    "load_text_stack": load_text_stack,
    "load_turbo_vaed": load_turbo_vaed,
}


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> Path:
    return _tokenized_folder(tmp_path_factory.mktemp("tok"))


@pytest.mark.badinput
@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw2", "raw0"])
@pytest.mark.parametrize("name", ["weights.ckpt", "weights.pt", "weights.bin", "weights.safetensors"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_malicious_pickle_is_refused_by_every_loader(tmp_path, tokenizer_files, loader, name, fmt):
    for f in tokenizer_files.iterdir():  # real tokenizer files beside it, so the weights file is what gets judged
        (tmp_path / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "PWNED"
    path = _write_evil(tmp_path / name, marker, fmt)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        LOADERS[loader](path)
    assert not marker.exists(), f"{loader} ran code from {name}: {info.value}"
    assert str(path.name) in str(info.value) or "safetensors" in str(info.value)


@pytest.mark.badinput
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("loader", ["load_dit", "load_encoder", "load_text_stack"])
def test_malicious_pickle_inside_a_model_folder(tmp_path, tokenizer_files, loader, fmt):
    """A folder whose model.safetensors / shard is a pickle, next to real tokenizer files."""
    marker = tmp_path / "PWNED"
    folder = tmp_path / "model"
    folder.mkdir()
    for f in tokenizer_files.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    _write_evil(folder / "model.safetensors", marker, fmt)
    _write_evil(folder / "pytorch_model.bin", marker, fmt)
    with pytest.raises(ValueError, match="pickle"):
        LOADERS[loader](folder)
    assert not marker.exists()


@pytest.mark.badinput
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_converter_reads_with_weights_only_and_refuses_code(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    src = _write_evil(tmp_path / "checkpoint-340000.ckpt", marker, fmt)
    dst = tmp_path / "turbo.safetensors"
    with pytest.raises(ValueError, match=r"refused to read .*checkpoint-340000\.ckpt.*could run code"):
        convert_checkpoint(src, dst)
    assert not marker.exists() and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-340000.ckpt"]  # no temp file left


# -- (a) nothing else in the package can unpickle ----------------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.loads", "dill.load", "joblib.load",
                "torch.jit.load", "eval", "exec", "shelve.open", "cloudpickle.load"}


def _calls(root: Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                yield path.relative_to(REPO).as_posix(), node


def test_only_the_turbo_ckpt_reader_calls_torch_load_and_with_weights_only():
    found = []
    for dirname in PACKAGE_DIRS:
        for rel, call in _calls(REPO / dirname):
            name = _dotted(call.func)
            if name == "torch.load" or name.endswith(".load") and "torch" in name:
                kw = {k.arg: k.value for k in call.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                found.append((rel, name, safe))
    assert found == [("happyhorse_core/decoders/turbo_ckpt.py", "torch.load", True)]
    assert (REPO / "__init__.py").read_text().count("torch.load(") == 0


def test_no_other_way_to_run_code_from_data():
    bad = []
    for dirname in PACKAGE_DIRS:
        for rel, call in _calls(REPO / dirname):
            name = _dotted(call.func)
            kw = {k.arg: k.value for k in call.keywords}
            allow_pickle = isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True
            if name in UNSAFE_CALLS or allow_pickle:
                bad.append(f"{rel}:{call.lineno} {name}")
    assert bad == []


# -- (b) no network --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [("203.0.113.7", 80), ("8.8.8.8", 53), ("example.com", 443),
                                     ("10.0.0.1", 8188)])
def test_non_loopback_connect_is_refused(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)  # were the guard missing, fail fast instead of hanging
        with pytest.raises(OSError, match="network access is disabled in the tests"):
            s.connect(address)
        with pytest.raises(OSError, match="network access is disabled in the tests"):
            s.connect_ex(address)
    with pytest.raises(OSError, match="network access is disabled in the tests"):
        socket.create_connection(address, timeout=1)


def test_ipv6_non_loopback_is_refused():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this python")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        with pytest.raises(OSError, match="network access is disabled in the tests"):
            s.connect(("2001:db8::1", 80, 0, 0))


def test_urllib_to_the_internet_is_refused():
    import urllib.error
    import urllib.request
    with pytest.raises((urllib.error.URLError, OSError), match="network access is disabled in the tests"):
        urllib.request.urlopen("http://huggingface.co/", timeout=2)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_loopback_still_works(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1" if host == "localhost" else host, 0))  # Linux routes all of 127/8 to lo
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection((host, port), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"hi")
                assert conn.recv(2) == b"hi"


def test_unix_socket_still_works(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            conn, _ = server.accept()
            conn.close()


# -- (c) nodes: model files only through model_path, no file writes -------------------------------------------------

def _node_files() -> list[Path]:
    return sorted((REPO / "nodes").glob("*.py"))


def test_every_file_widget_goes_through_model_path():
    """Each execute() argument that names a model file (*_name) is passed to cb.model_path(folder, name)."""
    seen = []
    for path in _node_files():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not (isinstance(fn, ast.FunctionDef) and fn.name == "execute"):
                continue
            names = [a.arg for a in fn.args.args if a.arg.endswith("_name")]
            confined = {c.args[1].id for c in ast.walk(fn) if isinstance(c, ast.Call)
                        and _dotted(c.func) == "cb.model_path" and len(c.args) == 2 and isinstance(c.args[1], ast.Name)}
            for name in names:
                assert name in confined, f"{path.name}: execute() uses {name!r} without cb.model_path"
                seen.append(name)
    assert sorted(seen) == ["encoder_name", "lora_name", "model_name", "vae_name", "vae_name"]


WRITE_CALLS = {"open", "os.replace", "os.rename", "os.remove", "os.unlink", "os.makedirs", "os.mkdir", "shutil.copy",
               "shutil.copyfile", "shutil.move", "shutil.rmtree", "torch.save", "save_file", "write_mp4",
               "write_safetensors_stream", "np.save", "av.open"}
# not "replace": str.replace is everywhere; os.replace is in WRITE_CALLS
WRITE_METHODS = {"write_text", "write_bytes", "mkdir", "unlink", "save", "touch", "rename", "symlink_to", "rmdir"}


def test_node_files_never_write_files():
    bad = []
    for path in _node_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
                if name in WRITE_CALLS or name.split(".")[-1] in WRITE_CALLS or method in WRITE_METHODS:
                    bad.append(f"{path.name}:{node.lineno} {name}")
    assert bad == [], "nodes must leave saving to ComfyUI's native SaveVideo / SaveAudio"


# -- (d) package writers: whole or nothing ---------------------------------------------------------------------------

def test_streamed_safetensors_write_failing_midway_leaves_nothing(tmp_path):
    dest = tmp_path / "out.safetensors"
    specs = [("a", torch.float32, (4,)), ("b", torch.float32, (4,)), ("c", torch.float32, (4,))]

    def produce(key):
        if key == "b":
            raise RuntimeError("disk full")
        return torch.ones(4)

    with pytest.raises(RuntimeError, match="disk full"):
        write_safetensors_stream(dest, specs, produce)
    assert list(tmp_path.iterdir()) == []
    dest.write_bytes(b"previous good file")
    with pytest.raises(RuntimeError, match="disk full"):
        write_safetensors_stream(dest, specs, produce)
    assert dest.read_bytes() == b"previous good file" and [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]
    write_safetensors_stream(dest, specs, lambda key: torch.full((4,), float(ord(key))))
    from safetensors.torch import load_file
    assert load_file(dest)["c"].tolist() == [99.0] * 4
