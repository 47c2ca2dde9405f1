"""A tiny, random, HF-compatible T5Gemma text folder for tests and the `--tiny` CLI.

`write_tiny_text_folder(folder)` writes what a real `google/t5gemma-9b-9b-ul2` folder holds, at toy
size: `config.json` (T5Gemma layout with `encoder`/`decoder` sections), `model.safetensors` with
`model.encoder.*` keys (the official key names; no decoder), and Gemma-style tokenizer files
(`tokenizer.json`, `tokenizer_config.json` with add_bos/add_eos false, `special_tokens_map.json`).
The tokenizer is a byte-fallback BPE trained here, deterministically and offline, on a short
built-in text in the seven supported languages, so any string tokenizes. The encoder width is a
parameter because the DiT's `text_in_channels` (3584 in every preset, tiny included) must match it;
depth, heads, MLP width and vocabulary stay small (about 4.5 M parameters, 18 MB in fp32, at width 3584).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from ..text.encoder import T5GemmaEncoder, T5GemmaEncoderConfig
from ..weights.safetensors_io import write_safetensors

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, Gemma's order
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))  # ids 4..259, for byte fallback

TINY_CORPUS = (
    "A woman with short grey hair sits at a wooden desk and looks into the camera.",
    "The camera stays still in a medium close-up; soft window light falls from the left.",
    "He speaks in a calm, low voice, pausing briefly between sentences.",
    "Dialogue:",
    "Background Sound:",
    "<No prominent background sound>",
    '<Man in a blue jacket, English>: "We should leave before the rain starts."',
    "<Quiet rain on a window and distant traffic>",
    "今天的天气很好，我们一起去公园散步吧。",
    "你说得对，这件事情我们明天再讨论。",
    "请把窗户关上，外面有点冷。",
    "今日天氣好好，我哋一齊去飲茶啦。",
    "你講得啱，聽日再傾啦。",
    "唔該你幫我拎杯水。",
    "おはようございます。今日はいい天気ですね。",
    "この店のラーメンはとてもおいしいです。",
    "ちょっと待ってください、すぐに行きます。",
    "안녕하세요, 오늘 날씨가 정말 좋네요.",
    "저는 커피보다 차를 더 좋아해요.",
    "내일 다시 이야기합시다.",
    "Guten Morgen, wie geht es dir heute?",
    "Ich habe das Buch gestern in der Bibliothek gefunden.",
    "Das Wetter ist schön, lass uns spazieren gehen.",
    "Bonjour, je suis très content de vous voir.",
    "Nous allons au marché demain matin avec les enfants.",
    "Il fait beau aujourd'hui, allons nous promener.",
    "Numbers and marks: 0 1 2 3 4 5 6 7 8 9, 10%, 25 fps, 4 seconds!",
)


def _train_tokenizer(vocab_size: int, limit_alphabet: int):
    """Byte-fallback BPE shaped like Gemma's tokenizer.json (spaces become '▁', no BOS added)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    def shell(model):
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        return tok

    # The trainer breaks ties between equally frequent characters at random, so pick the alphabet
    # here (most frequent first, then by code point); rarer characters use byte fallback.
    counts = Counter(ch for line in TINY_CORPUS for ch in line.replace(" ", "\u2581"))
    alphabet = sorted(counts, key=lambda ch: (-counts[ch], ch))[:limit_alphabet]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS + BYTE_TOKENS),
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet), min_frequency=2,
                                  show_progress=False)
    draft = shell(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    draft.train_from_iterator(TINY_CORPUS, trainer=trainer)
    # Rebuild so that only the four specials are "added tokens" (byte tokens stay plain vocab).
    state = json.loads(draft.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = shell(models.BPE(vocab=state["vocab"], merges=merges, unk_token="<unk>", byte_fallback=True,
                           fuse_unk=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def write_tiny_tokenizer(folder: str | Path, vocab_size: int = 512, limit_alphabet: int = 120,
                         add_bos_token: bool = False, add_eos_token: bool = False) -> int:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json; returns the vocab size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(vocab_size, limit_alphabet)
    tok.save(str(folder / "tokenizer.json"))
    specials = dict(zip(("pad_token", "eos_token", "bos_token", "unk_token"), SPECIAL_TOKENS))
    config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": add_bos_token, "add_eos_token": add_eos_token,
              "clean_up_tokenization_spaces": False, "padding_side": "right", **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return tok.get_vocab_size(with_added_tokens=True)


def tiny_encoder_config(vocab_size: int, hidden_size: int = 3584, num_layers: int = 2,
                        sliding_window: int = 8) -> T5GemmaEncoderConfig:
    """Small heads/MLP/depth; `hidden_size` is the output width the DiT's text_in_channels must equal."""
    return T5GemmaEncoderConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=64,
                                num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=1,
                                head_dim=32, query_pre_attn_scalar=32, sliding_window=sliding_window)


def hf_config_dict(cfg: T5GemmaEncoderConfig, dtype: torch.dtype) -> dict:
    """A T5Gemma `config.json` (encoder-only model) for `cfg`, readable by transformers 4.56."""
    encoder = cfg.to_hf_encoder_dict()
    decoder = {**encoder, "is_decoder": True, "cross_attention_hidden_size": cfg.hidden_size}
    return {"architectures": ["T5GemmaEncoderModel"], "model_type": "t5gemma", "is_encoder_decoder": False,
            "encoder": encoder, "decoder": decoder, "vocab_size": cfg.vocab_size, "pad_token_id": 0,
            "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": True,
            "torch_dtype": str(dtype).removeprefix("torch.")}


def random_encoder(cfg: T5GemmaEncoderConfig, seed: int = 0) -> T5GemmaEncoder:
    """Seeded random weights; norm offsets are non-zero so the (1 + w) path is exercised."""
    gen = torch.Generator().manual_seed(seed)
    model = T5GemmaEncoder(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.1 if name.endswith("norm.weight") else (0.5 if "embed" in name else 0.05)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def write_tiny_text_folder(folder: str | Path, *, hidden_size: int = 3584, num_layers: int = 2,
                           sliding_window: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32
                           ) -> T5GemmaEncoderConfig:
    """Tokenizer files + config.json + model.safetensors (`model.encoder.*`) in `folder`."""
    folder = Path(folder)
    vocab = write_tiny_tokenizer(folder)
    cfg = tiny_encoder_config(vocab, hidden_size, num_layers, sliding_window)
    model = random_encoder(cfg, seed)
    tensors = {f"model.encoder.{k}": v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    write_safetensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config_dict(cfg, dtype), indent=2), encoding="utf-8")
    return cfg
