"""Write the example inputs the shipped workflows load (workflows/assets/), so they can be remade here.

    .venv/bin/python scripts/make_workflow_assets.py          # both files
    .venv/bin/python scripts/make_workflow_assets.py --image  # only the start image

- happyhorse_start_image.png: a drawn portrait (sky, hair, face, eyes, mouth, blazer) at 896x512 (16:9, the
  workflows' aspect), made with numpy shapes and written as an RGB PNG with the standard library. It is a
  stand-in for your photo, not a photo.
- happyhorse_voice.wav: the line workflow_specs.VOICE_LINE spoken by espeak-ng (`apt-get install
  espeak-ng`), 22.05 kHz mono, about 5 s: a real speech recording for the lip-sync and talking-photo
  workflows (made here, so it carries no one's voice or licence).
"""
from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_specs import ASSETS, START_IMAGE, VOICE_LINE, VOICE_TRACK  # noqa: E402

WIDTH, HEIGHT = 896, 512


def _ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, rgb: tuple[int, int, int]) -> None:
    """Fill an axis-aligned ellipse in img [H, W, 3] (uint8), anti-aliased over one pixel."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)  # 1 on the rim
    alpha = np.clip((1.0 - d) * min(rx, ry), 0.0, 1.0)[..., None]  # [H, W, 1]
    img[:] = (img * (1 - alpha) + np.array(rgb, np.float32) * alpha).round().astype(np.uint8)


def portrait() -> np.ndarray:
    """[HEIGHT, WIDTH, 3] uint8: a simple frontal head-and-shoulders drawing on a late-afternoon sky."""
    y = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    top, bottom = np.array([92, 140, 196], np.float32), np.array([236, 186, 128], np.float32)
    img = np.broadcast_to(top * (1 - y) + bottom * y, (HEIGHT, WIDTH, 3)).round().astype(np.uint8).copy()
    cx = WIDTH / 2
    _ellipse(img, cx - 250, 470, 130, 60, (70, 96, 70))  # out-of-focus trees
    _ellipse(img, cx + 270, 460, 150, 70, (64, 90, 66))
    _ellipse(img, cx, 560, 230, 170, (34, 44, 82))  # navy blazer
    _ellipse(img, cx, 420, 46, 60, (214, 168, 140))  # neck
    _ellipse(img, cx, 235, 135, 165, (52, 36, 30))  # hair behind the face
    _ellipse(img, cx, 250, 98, 128, (226, 182, 152))  # face
    _ellipse(img, cx, 150, 104, 50, (52, 36, 30))  # fringe
    for side in (-1, 1):
        _ellipse(img, cx + side * 38, 238, 17, 10, (250, 248, 244))  # eye whites
        _ellipse(img, cx + side * 38, 239, 8, 8, (60, 42, 30))  # irises
        _ellipse(img, cx + side * 38, 214, 22, 4, (70, 48, 38))  # brows
        _ellipse(img, cx + side * 60, 292, 16, 9, (232, 160, 142))  # cheeks
    _ellipse(img, cx, 282, 9, 20, (208, 158, 130))  # nose
    _ellipse(img, cx, 330, 34, 11, (172, 82, 84))  # mouth
    _ellipse(img, cx, 327, 26, 4, (120, 50, 56))
    return img


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """RGB uint8 [H, W, 3] -> PNG (zlib + struct, no imaging library)."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
    return path


def write_voice(path: Path) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed: apt-get install -y espeak-ng (or keep the shipped wav)")
    subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(path), VOICE_LINE], check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", action="store_true", help="only the start image")
    args = ap.parse_args(argv)
    ASSETS.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_png(ASSETS / START_IMAGE, portrait())}")
    if not args.image:
        print(f"wrote {write_voice(ASSETS / VOICE_TRACK)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
