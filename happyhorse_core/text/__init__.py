"""Text side of the pipeline: prompt format, Gemma tokenizer, T5Gemma encoder, DiT text features."""
from .encoder import (MAX_TEXT_TOKENS, T5GemmaEncoder, T5GemmaEncoderConfig, TextFeatures, encode_prompt,
                      text_features)
from .loading import load_encoder, load_text_stack
from .prompts import (DEFAULT_NEGATIVE_PROMPT, LANGUAGES, DialogueLine, build_prompt, normalize_language,
                      space_cjk)
from .tokenizer import T5GemmaTokenizer, find_tokenizer_file, load_tokenizer

__all__ = [
    "MAX_TEXT_TOKENS", "T5GemmaEncoder", "T5GemmaEncoderConfig", "TextFeatures", "encode_prompt", "text_features",
    "load_encoder", "load_text_stack", "DEFAULT_NEGATIVE_PROMPT", "LANGUAGES", "DialogueLine", "build_prompt",
    "normalize_language", "space_cjk", "T5GemmaTokenizer", "find_tokenizer_file", "load_tokenizer",
]
