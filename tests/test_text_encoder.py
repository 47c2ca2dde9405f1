"""T5Gemma encoder, loader and tokenizer against transformers 4.56.0 (the reference's own stack)."""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, T5GemmaConfig, T5GemmaEncoderModel

from happyhorse_core.errors import CheckpointError
from happyhorse_core.text import (DialogueLine, T5GemmaEncoderConfig, build_prompt, encode_prompt, load_encoder,
                                  load_text_stack, load_tokenizer, text_features)
from happyhorse_core.text.encoder import T5GemmaEncoder, attention
from happyhorse_core.testing.tiny_text import TINY_CORPUS, random_encoder, write_tiny_text_folder, write_tiny_tokenizer

WINDOW = 8  # tiny sliding window: prompts below are several windows long
SEVEN_LANGUAGE_TEXTS = [
    "The weather is lovely today, let's take a walk.",
    "我们明天早上八点在火车站见面。",
    "佢哋聽日會嚟我屋企食飯。",
    "駅まで歩いて十分くらいかかります。",
    "주말에 친구들과 바다에 갈 거예요.",
    "Könnten Sie mir bitte den Weg zum Bahnhof zeigen?",
    "Où se trouve la boulangerie la plus proche ?",
    "Emoji and rare script fall back to bytes: 🐴 ᚠᛇᚻ ✓",
]


def _hf(folder: Path, impl: str, dtype: torch.dtype = torch.float32) -> T5GemmaEncoderModel:
    return T5GemmaEncoderModel.from_pretrained(folder, attn_implementation=impl, dtype=dtype).eval()


def _hf_hidden(model: T5GemmaEncoderModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # the reference passes the tokenizer's all-ones attention mask
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _with_softcap(encoder: T5GemmaEncoder, on: bool) -> T5GemmaEncoder:
    clone = T5GemmaEncoder(dataclasses.replace(encoder.config, apply_attn_softcap=on))
    clone.load_state_dict(encoder.state_dict())
    return clone.eval()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t5tiny")
    write_tiny_text_folder(folder, hidden_size=64, num_layers=4, sliding_window=WINDOW)
    return folder


@pytest.fixture(scope="module")
def hf_random_folder(tmp_path_factory) -> Path:
    """A random transformers T5GemmaEncoderModel saved by transformers itself (keys `encoder.*`)."""
    enc = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW)
    torch.manual_seed(0)
    model = T5GemmaEncoderModel(T5GemmaConfig(encoder=enc, vocab_size=300, is_encoder_decoder=False))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if "norm" in name else 0.3))
    folder = tmp_path_factory.mktemp("hfrandom")
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def long_ids() -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return torch.randint(4, 300, (1, 5 * WINDOW + 3), generator=gen)  # [1, 43]


# ---------------------------------------------------------------------------------------------
@pytest.mark.parity
def test_parity_with_transformers_saved_model(hf_random_folder, long_ids):
    hf = _hf(hf_random_folder, "sdpa")
    ours = load_encoder(hf_random_folder, dtype=torch.float32, require_tokenizer=False)
    assert ours.config.layer_types == ("sliding_attention", "full_attention") * 2
    ref = _hf_hidden(hf, long_ids)
    out = ours.encode(long_ids)
    assert out.shape == (1, long_ids.shape[1], 48) and out.dtype == torch.float32
    err = (out - ref).abs().max().item()
    assert err <= 1e-5 * max(1.0, ref.abs().max().item()), f"max abs error {err}"
    # The window must actually matter for this input, or the test would not cover sliding layers.
    wide = T5GemmaEncoder(dataclasses.replace(ours.config, sliding_window=1000))
    wide.load_state_dict(ours.state_dict())
    assert (wide.encode(long_ids) - ref).abs().max().item() > 1e-3


@pytest.mark.parity
def test_reference_attention_is_sdpa_without_softcap(hf_random_folder, long_ids):
    """transformers picks SDPA by default and SDPA drops the 50.0 softcap; eager applies it."""
    ours = load_encoder(hf_random_folder, dtype=torch.float32, require_tokenizer=False)
    assert T5GemmaEncoderModel.from_pretrained(hf_random_folder).config._attn_implementation == "sdpa"
    assert ours.config.attn_logit_softcapping == 50.0 and not ours.config.apply_attn_softcap
    capped = _with_softcap(ours, True)
    eager_ref = _hf_hidden(_hf(hf_random_folder, "eager"), long_ids)
    sdpa_ref = _hf_hidden(_hf(hf_random_folder, "sdpa"), long_ids)
    assert (capped.encode(long_ids) - eager_ref).abs().max().item() <= 1e-5 * eager_ref.abs().max().item()
    assert (ours.encode(long_ids) - sdpa_ref).abs().max().item() <= 1e-5 * sdpa_ref.abs().max().item()


def test_softcap_math():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, 6, 8, generator=gen) * 6 for _ in range(3))
    k, v = k[:, :2], v[:, :2]  # GQA: 4 query heads over 2 kv heads
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    logits = q @ kk.transpose(-1, -2) * 0.5
    assert logits.abs().max() > 50  # big enough for the cap to bite
    want = torch.softmax(torch.tanh(logits / 50) * 50, -1) @ vv
    # Tolerance from the numerics, not from one CPU's kernels: each fp32 logit is a head_dim-long dot
    # product whose rounding error (in whatever order the kernel sums) is at most head_dim * eps *
    # sum|q_i k_i| * scale; a logit error dL moves each softmax output by at most 2 * dL * max|v|.
    # Here sum|q_i k_i| * scale reaches ~256, so the bound is ~6e-3 (AMD EPYC measured 7.3e-5, Intel
    # with AMX less), far below the ~3 the cap changes the result by (last assertion).
    eps = torch.finfo(torch.float32).eps
    tol = float(2 * eps * q.shape[-1] * (q.abs() @ kk.abs().transpose(-1, -2) * 0.5).max() * vv.abs().max())
    assert torch.allclose(attention(q, k, v, None, 0.5, 50.0), want, rtol=0, atol=tol)
    assert torch.allclose(attention(q, k, v, None, 0.5, None), torch.softmax(logits, -1) @ vv, rtol=0, atol=tol)
    assert not torch.allclose(want, torch.softmax(logits, -1) @ vv, rtol=0, atol=100 * tol)


@pytest.mark.parity
def test_state_dict_keys_are_hf_keys(hf_random_folder):
    ours = load_encoder(hf_random_folder, dtype=torch.float32, require_tokenizer=False)
    hf_keys = {k.removeprefix("encoder.") for k in _hf(hf_random_folder, "sdpa").state_dict()}
    assert set(ours.state_dict()) == hf_keys


@pytest.mark.parity
def test_tiny_factory_folder_loads_in_transformers(tiny_folder):
    """Our tiny folder (model.encoder.* keys) is a valid HF folder, and both stacks agree end to end."""
    encoder, tokenizer = load_text_stack(tiny_folder, dtype=torch.float32)
    hf, hf_tok = _hf(tiny_folder, "sdpa"), AutoTokenizer.from_pretrained(tiny_folder)
    prompt = build_prompt("A woman looks into the camera.", [DialogueLine("Woman", "Japanese", "おはよう")])
    ids = tokenizer(prompt)
    assert ids.tolist()[0] == hf_tok(prompt).input_ids and ids.shape[1] > 2 * WINDOW
    ref = _hf_hidden(hf, ids)
    feats = encode_prompt(encoder, tokenizer, prompt)
    assert feats.length == ids.shape[1] and not feats.truncated
    assert torch.allclose(feats.features, ref[0].half().float(), atol=1e-3, rtol=0)
    assert (encoder.encode(ids) - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


@pytest.mark.parity
def test_bf16_matches_transformers_bf16(tiny_folder):
    encoder, tokenizer = load_text_stack(tiny_folder)  # bf16 is the default
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}
    ids = tokenizer(" ".join(TINY_CORPUS[8:14]))
    out, ref = encoder.encode(ids), _hf_hidden(_hf(tiny_folder, "sdpa", torch.bfloat16), ids)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref.float()).abs().max().item() <= 2e-2 * ref.float().abs().max().item()


def test_tiny_width_is_configurable_to_dit_width(tmp_path):
    cfg = write_tiny_text_folder(tmp_path, hidden_size=3584)
    encoder, tokenizer = load_text_stack(tmp_path, dtype=torch.float32)
    assert cfg.hidden_size == 3584 and cfg.num_hidden_layers == 2
    assert encoder.encode(tokenizer("Guten Morgen")).shape[-1] == 3584
    assert sum(p.numel() for p in encoder.parameters()) < 6_000_000


# ---------------------------------------------------------------------------------------------
def test_config_from_hf_9b_config():
    layer_types = ["sliding_attention", "full_attention"] * 21
    module = dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                  attn_logit_softcapping=50.0, rope_theta=10000.0, rms_norm_eps=1e-6, layer_types=layer_types,
                  hidden_activation="gelu_pytorch_tanh", vocab_size=256000)
    hf_dict = T5GemmaConfig(encoder=module, decoder=module).to_dict()
    cfg = T5GemmaEncoderConfig.from_hf_config(hf_dict)
    assert cfg == T5GemmaEncoderConfig()  # our defaults are the 9B encoder
    assert cfg.layer_types == tuple(layer_types) and cfg.vocab_size == 256000
    assert T5GemmaEncoderConfig.from_hf_config({"encoder": module}).num_hidden_layers == 42
    bare = {**module, "model_type": "t5_gemma_module", "num_hidden_layers": 2, "layer_types": None}
    assert T5GemmaEncoderConfig.from_hf_config(bare).layer_types == ("sliding_attention", "full_attention")
    with pytest.raises(ValueError, match="no T5Gemma encoder section"):
        T5GemmaEncoderConfig.from_hf_config({"model_type": "gemma2"})


def test_text_features_cap_and_fp16_rounding():
    hidden = torch.randn(1, 700, 16, dtype=torch.float32)
    hidden[0, 0, 0] = 1.0001  # not representable in fp16 -> 1.0
    feats = text_features(hidden)
    assert feats.features.shape == (640, 16) and feats.features.dtype == torch.float32
    assert feats.length == 640 and feats.truncated
    assert feats.features[0, 0].item() == 1.0
    assert torch.equal(feats.features, hidden[0, :640].half().float())
    short = text_features(hidden[0, :37])  # [n, D] input is accepted too
    assert short.length == 37 and not short.truncated and short.features.shape == (37, 16)
    exact = text_features(hidden[:, :640])
    assert exact.length == 640 and not exact.truncated
    with pytest.raises(ValueError, match="one prompt at a time"):
        text_features(torch.zeros(2, 5, 16))


# ---------------------------------------------------------------------------------------------
def _seven_language_cases(tok):
    yield from SEVEN_LANGUAGE_TEXTS
    yield from TINY_CORPUS
    yield build_prompt("A man speaks.", [DialogueLine("Man", "Korean", "안녕하세요")], "Soft rain")
    yield "  leading and  double spaces <bos> inside <eos> "


def test_tokenizer_ids_equal_autotokenizer(tiny_folder):
    ours, hf = load_tokenizer(tiny_folder), AutoTokenizer.from_pretrained(tiny_folder)
    assert ours.backend == "tokenizers" and not ours.add_bos and not ours.add_eos
    for text in _seven_language_cases(ours):
        assert ours.encode(text) == hf(text).input_ids, text
    byte_ids = ours.encode("🐴")
    assert len(byte_ids) == 4 and all(4 <= i < 260 for i in byte_ids)  # UTF-8 bytes via byte fallback
    assert ours.decode(ours.encode(SEVEN_LANGUAGE_TEXTS[-1])) == SEVEN_LANGUAGE_TEXTS[-1]


def test_tokenizer_honours_add_bos_and_eos(tmp_path):
    write_tiny_tokenizer(tmp_path, add_bos_token=True, add_eos_token=True)
    ours, hf = load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    ids = ours.encode(SEVEN_LANGUAGE_TEXTS[1])
    assert ids == hf(SEVEN_LANGUAGE_TEXTS[1]).input_ids
    assert ids[0] == ours.bos_id == 2 and ids[-1] == ours.eos_id == 1


def test_tiny_tokenizer_is_deterministic(tmp_path):
    write_tiny_tokenizer(tmp_path / "a")
    write_tiny_tokenizer(tmp_path / "b")
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()


def test_sentencepiece_tokenizer_model_matches_transformers_slow(tmp_path):
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 3), model_writer=buf, vocab_size=700, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=0.98, num_threads=1, minloglevel=2,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<start_of_turn>"])
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": False,
         "additional_special_tokens": ["<start_of_turn>"]}))
    ours = load_tokenizer(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path, use_fast=False)
    assert ours.backend == "sentencepiece"
    for text in [*SEVEN_LANGUAGE_TEXTS, "a<eos>b<start_of_turn>c <bos>"]:
        assert ours.encode(text) == hf(text).input_ids, text


# ---------------------------------------------------------------------------------------------
def _encoder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.weights
def test_sharded_folder_never_reads_decoder(tiny_folder, tmp_path):
    """Index + shards; the decoder shard is listed but absent, so any decoder read would fail."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_folder / name).read_bytes())
    tensors = _encoder_tensors(tiny_folder)
    keys = sorted(tensors)
    shards = {"model-00001-of-00003.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00003.safetensors": keys[len(keys) // 2:]}
    weight_map = {k: shard for shard, ks in shards.items() for k in ks}
    weight_map["model.decoder.embed_tokens.weight"] = "model-00003-of-00003.safetensors"
    for shard, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, str(tmp_path / shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = load_encoder(tmp_path, dtype=torch.float32)
    single = load_encoder(tiny_folder, dtype=torch.float32)
    ids = torch.arange(4, 40)[None]
    assert torch.equal(sharded.encode(ids), single.encode(ids))
    assert not any(p.is_meta for p in sharded.parameters())
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shard model-00002-of-00003.safetensors named by .* is missing"):
        load_encoder(tmp_path)


@pytest.mark.weights
@pytest.mark.parametrize("prefix", ["model.encoder.", "encoder.", ""])
def test_encoder_only_single_file_prefixes(tiny_folder, tmp_path, prefix):
    tensors = {prefix + k.removeprefix("model.encoder."): v for k, v in _encoder_tensors(tiny_folder).items()}
    tensors["model.decoder.norm.weight"] = torch.zeros(3)  # ignored when a prefix selects the encoder
    if not prefix:
        del tensors["model.decoder.norm.weight"]
    path = tmp_path / "t5gemma_encoder_fp32.safetensors"
    save_file(tensors, str(path))
    cfg = T5GemmaEncoderConfig.from_hf_config(json.loads((tiny_folder / "config.json").read_text()))
    model = load_encoder(path, dtype=torch.float32, config=cfg)
    ids = torch.arange(4, 30)[None]
    want = load_encoder(tiny_folder, dtype=torch.float32).encode(ids)
    assert torch.equal(model.encode(ids), want)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):  # files beside the weights
        (tmp_path / name).write_bytes((tiny_folder / name).read_bytes())
    model, tokenizer = load_text_stack(path, dtype=torch.float32)
    assert torch.equal(model.encode(ids), want) and tokenizer.encode("Hi") == load_tokenizer(tiny_folder).encode("Hi")


@pytest.mark.badinput
def test_folder_without_tokenizer(tiny_folder, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_folder / name).read_bytes())
    with pytest.raises(FileNotFoundError) as err:
        load_encoder(tmp_path)
    msg = str(err.value)
    assert "tokenizer.json" in msg and "tokenizer.model" in msg and "google/t5gemma-9b-9b-ul2" in msg
    with pytest.raises(FileNotFoundError, match="tokenizer.json or tokenizer.model"):
        load_text_stack(tmp_path)
    assert load_encoder(tmp_path, require_tokenizer=False).config.hidden_size == 64


@pytest.mark.badinput
def test_strict_key_and_shape_errors(tiny_folder, tmp_path):
    tensors = _encoder_tensors(tiny_folder)
    cfg = T5GemmaEncoderConfig.from_hf_config(json.loads((tiny_folder / "config.json").read_text()))
    missing = dict(tensors)
    del missing["model.encoder.layers.1.mlp.up_proj.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"\(1 missing key\(s\), first: \['layers\.1\.mlp\.up_proj\.weight'\]\)"):
        load_encoder(tmp_path / "missing.safetensors", config=cfg)
    extra = {**tensors, **{f"model.encoder.extra.{i}": torch.zeros(1) for i in range(12)}}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"\(12 unexpected key\(s\), first: \['extra\.0', .*\] \.\.\.\)"):
        load_encoder(tmp_path / "extra.safetensors", config=cfg)
    quanto = {k.replace("q_proj.weight", "q_proj.weight._data"): v for k, v in tensors.items()}
    save_file(quanto, str(tmp_path / "quanto.safetensors"))
    with pytest.raises(ValueError, match="optimum-quanto"):
        load_encoder(tmp_path / "quanto.safetensors", config=cfg)
    save_file(tensors, str(tmp_path / "good.safetensors"))
    with pytest.raises(CheckpointError, match=r"wrong shape, first: \['embed_tokens\.weight \[.*\] \(expected"):
        load_encoder(tmp_path / "good.safetensors", config=dataclasses.replace(cfg, vocab_size=cfg.vocab_size + 1))
    with pytest.raises(CheckpointError, match=r"w\.bin is a pickle checkpoint"):
        (tmp_path / "w.bin").write_bytes(b"x")
        load_encoder(tmp_path / "w.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(tmp_path / "nowhere")


@pytest.mark.badinput
def test_config_json_that_is_not_t5gemma(tiny_folder, tmp_path):
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((tiny_folder / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma2", "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"config.json: .*no T5Gemma encoder section"):
        load_encoder(tmp_path)
    (tmp_path / "config.json").unlink()  # no config -> 9B defaults, which the tiny weights do not fit
    with pytest.raises(CheckpointError, match=r"built from the 9B default sizes \(no config.json in .*418 missing"):
        load_encoder(tmp_path)


@pytest.mark.badinput
def test_missing_shard_and_missing_weights(tiny_folder, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((tiny_folder / "tokenizer.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="model.safetensors.index.json"):
        load_encoder(tmp_path)
    weight_map = {"model.encoder.norm.weight": "model-00001-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(FileNotFoundError, match="shard model-00001-of-00002.safetensors named by"):
        load_encoder(tmp_path)


@pytest.mark.badinput
def test_bad_token_ids_and_empty_input(tiny_folder):
    model = load_encoder(tiny_folder, dtype=torch.float32)
    with pytest.raises(ValueError, match="at least one token"):
        model.encode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="tokenizer and encoder do not match"):
        model.encode(torch.tensor([[5, model.config.vocab_size]]))


def test_core_does_not_import_transformers(repo_root):
    code = ("import sys, happyhorse_core.text, happyhorse_core.testing.tiny_text; "
            "bad = [m for m in ('transformers', 'comfy', 'folder_paths') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True)


def test_random_encoder_is_seeded():
    cfg = T5GemmaEncoderConfig(vocab_size=50, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    a, b = random_encoder(cfg, seed=5).state_dict(), random_encoder(cfg, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
