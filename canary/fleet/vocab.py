"""The synthetic models' tokenizer and vocabulary.

The tokenizer is lossless: concatenating the tokens of a text gives the text back, so every
reference answer can be generated exactly. Words keep their leading space (`` Paris``), each
Han, Hangul, Thai or kana character is a token of its own, digits are single tokens, runs of
spaces are one token, and anything else is one character.

The vocabulary is a few thousand tokens: those of every reference answer and generic answer,
common English filler words (the alternatives a healthy model hesitates between), the
rare-script and code-breaking tokens that the ``corrupt`` fault pushes up, and Latin
pseudo-words that fill it to a multiple of 512 so that logits have a realistic tail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_TOKEN = re.compile(
    r"[\u0E00-\u0E7F]|[\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF]|[\uAC00-\uD7AF\u1100-\u11FF]"
    r"| ?[A-Za-z\u00C0-\u024F\u0370-\u03FF\u0400-\u04FF']+|\d|\n|[ \t]+|.",
    re.DOTALL,
)

EOS = "<|end|>"
FILLER_WORDS = (
    "the a an and or of to in on at for with by from as is are was were be been it this that "
    "these those which who what when where how why not no yes also very more most some any all "
    "each other such only just than then there here so but if because while about into over "
    "under between after before during through can could may might should would will must do "
    "does did has have had make made use used many much well good new first last same different "
    "important simple common small large long short high low often usually generally typically"
).split()
THAI_TOKENS = ("สวัสดี", "ครับ", "ที่", "และ", "ของ", "ใน", "การ", "เป็น", "ไม่", "ได้", "ให้", "มี")
HAN_TOKENS = tuple("的是了在人我有中这个们来上大为和国地到以说时要就出会可也你对生能而子那得")
HANGUL_TOKENS = tuple("한국어에서는이다가을를의")
CODE_BREAKERS = (")))", "]]]", "}}}", "(((", ":::", '"""\'', "@@@", "<<<", " ===", "`)'")
_PSEUDO_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr gr pl st tr".split()
_PSEUDO_VOWELS = "a e i o u ai ea io ou".split()


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens; ``"".join(tokenize(t)) == t`` always holds."""
    return _TOKEN.findall(text)


def script_class(token: str) -> str:
    """A coarse class used to pick plausible alternatives: same class, same kind of token."""
    first = token.strip()[:1]
    if not first:
        return "space"
    code = ord(first)
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:
        return "hangul"
    if 0x3040 <= code <= 0x30FF:
        return "kana"
    if 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF:
        return "han"
    if first.isdigit():
        return "digit"
    if first.isalpha():
        return "word" if token.startswith(" ") else "word0"
    return "punct"


def _pseudo_words(count: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    for a in _PSEUDO_ONSETS:
        for v in _PSEUDO_VOWELS:
            for b in _PSEUDO_ONSETS:
                for w in _PSEUDO_VOWELS:
                    token = f" {a}{v}{b}{w}"
                    if token not in taken:
                        words.append(token)
                    if len(words) >= count:
                        return words
    return words


@dataclass
class Vocabulary:
    """Token strings, their ids, and the id groups the synthetic model draws on."""

    tokens: list[str]
    ids: dict[str, int]
    eos: int
    by_class: dict[str, np.ndarray]
    rare_by_script: dict[str, np.ndarray]
    code_breakers: np.ndarray
    filler: np.ndarray
    tail_mask: np.ndarray = field(repr=False)  # True where a token may appear in the healthy tail

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; characters not in the vocabulary are dropped (never happens for answers)."""
        return [self.ids[t] for t in tokenize(text) if t in self.ids]


def build_vocabulary(texts: Iterable[str], multiple: int = 512) -> Vocabulary:
    """A vocabulary covering ``texts`` plus filler, rare-script, code-breaking and pseudo-words."""
    ordered: dict[str, None] = {EOS: None}
    for word in FILLER_WORDS:
        ordered[f" {word}"] = None
    for text in texts:
        ordered.update(dict.fromkeys(tokenize(text)))
    for token in (*THAI_TOKENS, *HAN_TOKENS, *HANGUL_TOKENS, *CODE_BREAKERS):
        ordered[token] = None
    size = -(-(len(ordered) + 64) // multiple) * multiple
    ordered.update(dict.fromkeys(_pseudo_words(size - len(ordered), set(ordered))))
    tokens = list(ordered)
    ids = {t: i for i, t in enumerate(tokens)}
    classes: dict[str, list[int]] = {}
    for i, token in enumerate(tokens[1:], start=1):
        classes.setdefault(script_class(token), []).append(i)
    tail = np.array([script_class(t) in ("word", "word0", "punct", "digit") for t in tokens])
    tail[[ids[t] for t in CODE_BREAKERS]] = False
    tail[0] = False
    return Vocabulary(
        tokens=tokens,
        ids=ids,
        eos=0,
        by_class={k: np.array(v, dtype=np.int32) for k, v in classes.items()},
        rare_by_script={
            "Thai": np.array([ids[t] for t in THAI_TOKENS], dtype=np.int32),
            "Han": np.array([ids[t] for t in HAN_TOKENS], dtype=np.int32),
            "Hangul": np.array([ids[t] for t in HANGUL_TOKENS], dtype=np.int32),
        },
        code_breakers=np.array([ids[t] for t in CODE_BREAKERS], dtype=np.int32),
        filler=np.array([ids[f" {w}"] for w in FILLER_WORDS], dtype=np.int32),
        tail_mask=tail,
    )
