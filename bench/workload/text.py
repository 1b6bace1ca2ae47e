"""Text statistics for language-fair metrics: characters, words and UTF-8 bytes of a text.

Tokens are the wrong unit for comparing languages (the same sentence is 2 tokens for one
tokenizer and 9 for another), so per-text figures such as `j_per_kchar`, `tokens_per_char` and
`bits_per_byte` divide by these counts instead. Standard library only (`unicodedata`).

Definitions
-----------
`count_chars(text)`
    Unicode code points after NFC normalisation, every code point counted: letters, marks,
    digits, punctuation, spaces and line breaks. NFC makes "é" one character whether it was
    typed precomposed or as "e" + combining accent, and composes Hangul jamo into syllables.
    It counts code points, not user-perceived characters: Hindi "नमस्ते" is 6 code points
    (consonants, a virama and vowel signs) although a reader sees 3 clusters.

`count_bytes(text)`
    Length of the UTF-8 encoding of the text exactly as given, without normalisation, because
    `bits_per_byte` must divide by the bytes the model actually scored.

`count_words(text)`
    The text is NFC-normalised, then read left to right:

    * In scripts written with spaces between words (Latin, Cyrillic, Greek, Arabic, Hebrew,
      Devanagari and the other Indic scripts, Hangul, ...), a word is a maximal run of letters,
      combining marks and digits. An apostrophe, hyphen or middle dot joins two such runs into
      one word ("don't", "twelve-year-old", "col·lecció"); a "." or "," (or the Arabic
      decimal and thousands separators) joins two digits ("1,000.50"). ZWJ, ZWNJ and the soft
      hyphen never split a word. A combining mark always belongs to the word before it, so
      Devanagari vowel signs and viramas and Arabic harakat never start a word.
      Korean is written with spaces between eojeol (a word plus its particles and endings),
      so a Korean word here is an eojeol.
    * Each Han ideograph (Chinese hanzi, Japanese kanji, with the marks 々 〆 〇 〻) counts as
      one word. Chinese words average about 1.5 characters, so this slightly overcounts, but
      it needs no dictionary and gives the same answer every time.
    * A maximal run of Hiragana counts as one word, and so does a maximal run of Katakana; the
      prolonged sound mark ー continues either. A Katakana run is usually one loanword; a
      Hiragana run is usually a particle or an inflected ending.
    * Thai, Lao, Khmer, Myanmar and the other Southeast Asian scripts written without spaces
      cannot be split into words without a dictionary; a maximal run of them counts as one
      word, which undercounts, so compare those languages by `count_chars` instead.
    * Punctuation, symbols, emoji and whitespace are never words; a change of script (for
      example Latin letters, digits or kana next to Han) ends a word.

    Examples: "The cat's 2 toys." is 4 words; "私は東京でAIの研究をしています。" is 10
    (私 / は / 東 / 京 / で / AI / の / 研 / 究 / をしています).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["TextStats", "count_bytes", "count_chars", "count_words", "text_stats"]

# Character classes for the word scanner.
_OTHER, _WORD, _MARK, _JOINER, _CONNECTOR, _DIGIT_SEP = range(6)
_HAN, _HIRAGANA, _KATAKANA, _UNSPACED = range(6, 10)

_JOINERS = frozenset("\u200c\u200d\u00ad")  # ZWNJ, ZWJ, soft hyphen
_CONNECTORS = frozenset("'\u2019-\u2010\u2011\u00b7")  # apostrophes, hyphens, middle dot
_DIGIT_SEPARATORS = frozenset(".,\u066b\u066c")  # also the Arabic decimal/thousands separators
_PROLONGED_SOUND = frozenset("\u30fc\uff70")  # ー and its half-width form
_HAN_MARKS = frozenset("\u3005\u3006\u3007\u303b")  # 々 〆 〇 〻

_HAN_RANGES = (
    (0x3400, 0x4DBF),  # Extension A
    (0x4E00, 0x9FFF),  # Unified Ideographs
    (0xF900, 0xFAFF),  # Compatibility Ideographs
    (0x20000, 0x3FFFF),  # Extensions B and later, compatibility supplement (planes 2 and 3)
)
_HIRAGANA_RANGES = ((0x3041, 0x309F), (0x1B000, 0x1B16F))  # with hentaigana, small kana
_KATAKANA_RANGES = ((0x30A1, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_UNSPACED_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x1950, 0x19DF),  # Tai Le, New Tai Lue
    (0x1A20, 0x1AAF),  # Tai Tham
    (0x1B00, 0x1B7F),  # Balinese
    (0xA980, 0xA9FF),  # Javanese, Myanmar Extended-B
    (0xAA60, 0xAA7F),  # Myanmar Extended-A
)


def _in(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _char_class(ch: str) -> int:
    if ch in _JOINERS:
        return _JOINER
    category = unicodedata.category(ch)
    major = category[0]
    if major == "M":
        return _MARK
    if major not in "LN":
        if ch in _CONNECTORS:
            return _CONNECTOR
        if ch in _DIGIT_SEPARATORS:
            return _DIGIT_SEP
        return _OTHER
    cp = ord(ch)
    if cp < 0x0E00:  # fast path: Latin, Greek, Cyrillic, Arabic, Indic, ...
        return _WORD
    if ch in _HAN_MARKS or _in(cp, _HAN_RANGES):
        return _HAN
    if _in(cp, _HIRAGANA_RANGES):
        return _HIRAGANA
    if _in(cp, _KATAKANA_RANGES):
        return _KATAKANA
    if _in(cp, _UNSPACED_RANGES):
        return _UNSPACED
    return _WORD


def count_chars(text: str) -> int:
    """Unicode code points of `text` after NFC normalisation (see the module docstring)."""
    return len(unicodedata.normalize("NFC", text))


def count_bytes(text: str) -> int:
    """Bytes of the UTF-8 encoding of `text` exactly as given (no normalisation)."""
    return len(text.encode("utf-8"))


def count_words(text: str) -> int:
    """Words of `text` by the script-aware rule in the module docstring."""
    chars = unicodedata.normalize("NFC", text)
    classes = [_char_class(ch) for ch in chars]
    last = len(chars) - 1
    count = 0
    run = _OTHER  # class of the word being read; _OTHER between words
    for i, cls in enumerate(classes):
        if cls == _JOINER:
            continue
        if cls == _MARK:
            if run == _OTHER:  # a stray mark after a space still makes a word
                count += 1
                run = _WORD
            continue
        if cls == _HAN:
            count += 1
            run = _HAN
            continue
        if cls in (_HIRAGANA, _KATAKANA):
            if chars[i] in _PROLONGED_SOUND and run in (_HIRAGANA, _KATAKANA):
                continue
            if run != cls:
                count += 1
                run = cls
            continue
        if cls in (_WORD, _UNSPACED):
            if run != cls:
                count += 1
                run = cls
            continue
        if run == _WORD and i < last and classes[i + 1] == _WORD:
            if cls == _CONNECTOR:
                continue
            if (
                cls == _DIGIT_SEP
                and unicodedata.category(chars[i - 1]) == "Nd"
                and unicodedata.category(chars[i + 1]) == "Nd"
            ):
                continue
        run = _OTHER
    return count


@dataclass(frozen=True)
class TextStats:
    """The three counts of one text."""

    chars: int
    words: int
    bytes: int


def text_stats(text: str) -> TextStats:
    """`count_chars`, `count_words` and `count_bytes` of `text` together."""
    return TextStats(chars=count_chars(text), words=count_words(text), bytes=count_bytes(text))
