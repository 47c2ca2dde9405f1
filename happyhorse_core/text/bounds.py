"""Bounds on user text, applied before any model work: the text encoder's memory must not grow with the prompt.

Why: T5Gemma attention (and its sliding-window mask) is n x n in the token count, so an unbounded
prompt asks for memory that grows with the square of its length (a 48 KB prompt peaked at 14.5 GB
with a 2-head stand-in encoder; 5 000 dialogue lines asked for 264 GB). The model only ever reads
the first 640 tokens, so the tokens are counted first and cut to that limit before the encoder
runs; the caller warns with the count.

  * `prompt_tokens`: token ids of one prompt, cut to `max_tokens`, with the count before the cut.
    Texts longer than MAX_TOKENIZED_CHARS characters are cut at that length before tokenizing
    (the count is then a lower bound, "more than N tokens"): even the tokenizer's work is bounded.
  * `check_unicode`: a lone UTF-16 surrogate (pasted from a broken source) is not text; say where it is.
  * `MAX_DIALOGUE_LINES`: more utterances than could ever fit in 640 tokens are dropped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_TOKENIZED_CHARS = 200_000  # ~40x what 640 tokens can cover (the longest Gemma pieces are ~30 chars)
MAX_DIALOGUE_LINES = 64  # each formatted utterance costs >= 8 tokens: 64 lines already fill 640 tokens


@dataclass(frozen=True)
class PromptTokens:
    """Token ids that reach the encoder and how many the whole text has."""

    ids: list[int]  # at most max_tokens ids, in order
    total: int  # tokens of the text (of its first MAX_TOKENIZED_CHARS characters when `exact` is False)
    max_tokens: int
    exact: bool = True  # False: the text was longer than MAX_TOKENIZED_CHARS, `total` is a lower bound

    @property
    def truncated(self) -> bool:
        return self.total > self.max_tokens

    def count_text(self) -> str:
        return f"{self.total} tokens" if self.exact else f"more than {self.total} tokens"


def check_unicode(text: str, what: str) -> None:
    """ValueError naming the position of a lone surrogate (text that cannot be UTF-8 encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise ValueError(f"the {what} contains an invalid character at position {exc.start} (a lone UTF-16 "
                         f"surrogate U+{code:04X}, not a real character); delete it or paste the text again "
                         "from its source") from None


def prompt_tokens(tokenizer: Any, text: str, max_tokens: int, what: str = "prompt") -> PromptTokens:
    """Count the tokens of `text` and keep the first `max_tokens`; the encoder never sees more.

    `tokenizer.encode(str) -> list[int]`. ValueError (naming `what`) for a non-string, a lone
    surrogate, or a text that gives no tokens.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not isinstance(text, str):
        raise ValueError(f"the {what} must be text, got {type(text).__name__}")
    exact = len(text) <= MAX_TOKENIZED_CHARS
    text = text if exact else text[:MAX_TOKENIZED_CHARS]
    check_unicode(text, what)
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError(f"the {what} produced no tokens; write some text (even one word)")
    return PromptTokens(ids=ids[:max_tokens], total=len(ids), max_tokens=max_tokens, exact=exact)


def truncation_message(what: str, tokens: PromptTokens) -> str:
    """The warning shown when a text was cut: what, how long, the limit, what to do."""
    return (f"the {what} has {tokens.count_text()}; only the first {tokens.max_tokens} are used. "
            "Shorten it to keep its end.")


def dialogue_cap_message(total: int, limit: int = MAX_DIALOGUE_LINES) -> str:
    return (f"the dialogue has {total} lines; only the first {limit} are used (the model reads at most 640 "
            "tokens of prompt). Split the scene into several clips.")
