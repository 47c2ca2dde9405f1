"""Gemma tokenizer for the T5Gemma encoder, read from the model folder, never downloaded.

Gives the same ids as transformers' `AutoTokenizer.from_pretrained(folder)(text).input_ids`:
`tokenizer.json` is run with the `tokenizers` library (what the HF fast tokenizer wraps); a folder
with only `tokenizer.model` is run with `sentencepiece` (what the HF slow tokenizer wraps). Like
`GemmaTokenizerFast`, the BOS/EOS tokens come from `add_bos_token` / `add_eos_token` in
`tokenizer_config.json` (HF defaults when absent: BOS yes, EOS no); the real T5Gemma config sets
both to false, so the reference feeds the encoder the bare prompt tokens. No padding, no truncation.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..paths import broken_link_message
from .bounds import check_unicode

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # in order of preference
HUB_REPO = "google/t5gemma-9b-9b-ul2"
# GemmaTokenizer's defaults, used when tokenizer_config.json does not name the special tokens.
GEMMA_SPECIALS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}


def find_tokenizer_file(folder: str | Path) -> Path:
    """The tokenizer file to use in `folder`; FileNotFoundError naming what is expected."""
    folder = Path(folder)
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            return folder / name
    for name in TOKENIZER_FILES:
        broken = broken_link_message(folder / name)
        if broken:
            raise FileNotFoundError(f"{broken}; {TOKENIZER_FILES[0]} is needed from the hub repo {HUB_REPO}")
    raise FileNotFoundError(
        f"no tokenizer in {folder}: expected {' or '.join(TOKENIZER_FILES)} (plus tokenizer_config.json). "
        f"Copy them from the hub repo {HUB_REPO} into this folder.")


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-download it from {HUB_REPO}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; re-download it from "
                              f"{HUB_REPO}")
    return data


class T5GemmaTokenizer:
    """text -> token ids for the T5Gemma encoder."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.path = find_tokenizer_file(folder)
        cfg = _read_json(folder / "special_tokens_map.json")
        cfg.update(_read_json(folder / "tokenizer_config.json"))
        self.add_bos: bool = bool(cfg.get("add_bos_token", True))
        self.add_eos: bool = bool(cfg.get("add_eos_token", False))
        self.backend = "tokenizers" if self.path.suffix == ".json" else "sentencepiece"
        if self.backend == "tokenizers":
            self._init_tokenizers()
        else:
            self._init_sentencepiece(cfg)
        self.bos_id = self._special_id(cfg, "bos_token")
        self.eos_id = self._special_id(cfg, "eos_token")
        self.pad_id = self._special_id(cfg, "pad_token")
        if self.add_bos and self.bos_id is None:
            raise ValueError(f"{folder}/tokenizer_config.json sets add_bos_token but the vocabulary has no BOS token")
        if self.add_eos and self.eos_id is None:
            raise ValueError(f"{folder}/tokenizer_config.json sets add_eos_token but the vocabulary has no EOS token")

    # -- backends ----------------------------------------------------------------------------
    def _init_tokenizers(self) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the library raises a bare Exception with a serde message
            raise CheckpointError(f"{self.path} is not a valid tokenizer file ({exc}); the download is damaged or "
                                  f"it is another format: download tokenizer.json again from {HUB_REPO}") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)

    def _init_sentencepiece(self, cfg: dict[str, Any]) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise ImportError("this tokenizer folder has only tokenizer.model, which needs the sentencepiece "
                              "package: pip install sentencepiece (or add tokenizer.json from "
                              f"{HUB_REPO})") from None
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{self.path} is not a valid sentencepiece model ({exc}); download tokenizer.model "
                                  f"again from {HUB_REPO}") from None
        self.vocab_size = self._sp.get_piece_size()
        # Like HF's slow tokenizer: special/added tokens are cut out of the text before sentencepiece.
        specials: set[str | None] = {_token_content(cfg.get(k)) or d for k, d in GEMMA_SPECIALS.items()}
        specials.update(_token_content(t) for t in cfg.get("additional_special_tokens") or [])
        specials.update(_token_content(t) for t in (cfg.get("added_tokens_decoder") or {}).values())
        unk_id = self._sp.unk_id()
        self._specials: dict[str, int] = {}
        for s in filter(None, specials):
            idx = self._sp.piece_to_id(s)
            if idx != unk_id or s == self._sp.id_to_piece(unk_id):  # only tokens the vocabulary has
                self._specials[s] = idx
        self._split = (re.compile("(" + "|".join(map(re.escape, sorted(self._specials, key=len, reverse=True)))
                                  + ")") if self._specials else None)

    def _special_id(self, cfg: dict[str, Any], key: str) -> int | None:
        content = _token_content(cfg.get(key)) or GEMMA_SPECIALS[key]
        if self.backend == "tokenizers":
            return self._tok.token_to_id(content)
        idx = self._sp.piece_to_id(content)
        return None if idx == self._sp.unk_id() and content != "<unk>" else idx

    def _encode_body(self, text: str) -> list[int]:
        if self.backend == "tokenizers":
            return self._tok.encode(text, add_special_tokens=False).ids
        if self._split is None:
            return self._sp.encode(text)
        ids: list[int] = []
        for chunk in self._split.split(text):
            if chunk in self._specials:
                ids.append(self._specials[chunk])
            elif chunk:
                ids.extend(self._sp.encode(chunk))
        return ids

    # -- public ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of one prompt, with BOS/EOS only if tokenizer_config.json asks for them."""
        if not isinstance(text, str):
            raise ValueError(f"prompt must be a string, got {type(text).__name__}")
        check_unicode(text, "text")
        ids = self._encode_body(text)
        if self.add_bos:
            ids = [self.bos_id, *ids]
        if self.add_eos:
            ids = [*ids, self.eos_id]
        return ids

    def __call__(self, text: str) -> torch.Tensor:
        """input_ids [1, n] (int64) for `T5GemmaEncoder.encode`."""
        return torch.tensor([self.encode(text)], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        if self.backend == "tokenizers":
            return self._tok.decode(ids, skip_special_tokens=False)
        return self._sp.decode(ids)


def load_tokenizer(folder: str | Path) -> T5GemmaTokenizer:
    """The tokenizer of an HF T5Gemma folder (FileNotFoundError if its files are missing)."""
    return T5GemmaTokenizer(folder)
