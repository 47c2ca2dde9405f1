"""How model files are named in the loaders and found on disk (pure: paths only, no ComfyUI import).

Rules, the same as ComfyUI core's folder_paths where core has one:
  * Links are followed: a file or folder inside models/<folder>/ may be a symlink to anywhere (the
    Hugging Face cache, another disk). Only names that climb out of the folder ("..", absolute
    paths) are refused; a link's target is the user's choice, as in core.
  * A sharded Hugging Face folder (an index json + shards) is ONE list entry, "happyhorse/distill/
    (sharded)", instead of one entry per shard. Its path is the link path (models/.../distill), never
    the realpath: in the Hugging Face cache each shard is a link to blobs/<hash>, where the index and
    the other shards are not.
  * A shard named by the index still stands for its folder (older saved workflows pick shards); any
    other file next to the shards (a merged single file, an encoder-only file) loads itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

INDEX_NAMES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
SHARDED = " (sharded)"  # list entry suffix: "<folder>/ (sharded)"


def index_shards(folder: str) -> Optional[set[str]]:
    """File names the folder's safetensors index maps tensors to; None without a readable index."""
    for name in INDEX_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                weight_map = json.loads(Path(path).read_text(encoding="utf-8")).get("weight_map")
            except (OSError, ValueError, AttributeError):
                return None  # the loader reports a broken index when the folder is loaded
            return {str(v) for v in weight_map.values()} if isinstance(weight_map, dict) else None
    return None


def sharded_entry(folder_name: str) -> str:
    """'happyhorse/distill' -> 'happyhorse/distill/ (sharded)'."""
    return folder_name.rstrip("/") + "/" + SHARDED


def sharded_folder(name: str) -> Optional[str]:
    """The folder of a sharded list entry ('happyhorse/distill/ (sharded)' -> 'happyhorse/distill'), else None."""
    if not name.endswith(SHARDED):
        return None
    folder = name[: -len(SHARDED)].rstrip("/\\")
    return folder or None


def group_sharded(names: Iterable[str], roots: list[str]) -> list[str]:
    """Loader list, sorted: shards named by their folder's index become one '<folder>/ (sharded)' entry;
    everything else (single files, files beside shards the index does not name) stays as it is."""
    out: list[str] = []
    seen: set[str] = set()
    cache: dict[str, Optional[set[str]]] = {}
    for name in names:
        rel_dir, base = os.path.split(name.replace("\\", "/"))
        entry = name
        if rel_dir:
            for root in roots:
                folder = os.path.join(root, rel_dir)
                if not os.path.isfile(os.path.join(folder, base)):
                    continue
                if folder not in cache:
                    cache[folder] = index_shards(folder)
                if cache[folder] and base in cache[folder]:
                    entry = sharded_entry(rel_dir)
                break
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    return sorted(out)


def check_name(name: str, folder: str) -> list[str]:
    """The name's path components; ValueError for empty, absolute or '..' names (they leave the folder)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"empty model file name for {folder}: pick a file from the list")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"model name {name!r} is an absolute path: give a name relative to models/{folder}/")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"model name {name!r} contains '..': give a name inside models/{folder}/")
    return parts


def resolve_in_roots(name: str, roots: list[str], folder: str = "models") -> str:
    """Absolute path (links NOT resolved) of `name` under the first root that has it.

    `name` is a file ("happyhorse/x.safetensors") or a sharded entry ("happyhorse/distill/ (sharded)",
    giving the folder). ValueError for names that climb out; FileNotFoundError when it is not there.
    """
    shard_dir = sharded_folder(name)
    parts = check_name(shard_dir if shard_dir is not None else name, folder)
    for root in roots:
        candidate = os.path.abspath(os.path.join(root, *parts))
        if shard_dir is not None and os.path.isdir(candidate):
            return candidate
        if shard_dir is None and os.path.isfile(candidate):
            return candidate
    from ..happyhorse_core.paths import broken_link_message
    for root in roots:
        broken = broken_link_message(os.path.join(root, *parts))
        if broken:  # something IS there: a link whose target is gone (or a loop), not a missing file
            raise FileNotFoundError(f"{broken} (in the {folder} folder {root})")
    what = "folder" if shard_dir is not None else "file"
    raise FileNotFoundError(f"{name!r} ({what}) not found in the {folder} folders {list(roots)}: put it there and "
                            "refresh the node list (press R in the UI)")


def checkpoint_target(path: str) -> str:
    """A shard that its folder's index names stands for the folder; any other file for itself.
    Uses the link path's folder (a Hugging Face cache shard's realpath is a blob without the index)."""
    folder, base = os.path.split(path)
    shards = index_shards(folder)
    return folder if shards and base in shards else path
