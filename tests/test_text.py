"""Text statistics: characters, words and bytes, checked by hand for each script."""

from __future__ import annotations

import pytest

from bench.workload.text import TextStats, count_bytes, count_chars, count_words, text_stats


def test_english_words_keep_apostrophes_and_numbers() -> None:
    text = "The quick brown fox doesn't jump over 2 lazy dogs."
    # The / quick / brown / fox / doesn't / jump / over / 2 / lazy / dogs
    assert count_words(text) == 10
    assert count_chars(text) == 50
    assert count_bytes(text) == 50


def test_hindi_combining_marks_stay_inside_their_word() -> None:
    text = "नमस्ते दुनिया"
    # न म स ् त े (6) + space + द ु न ि य ा (6); vowel signs and the virama are marks.
    assert count_chars(text) == 13
    assert count_words(text) == 2
    assert count_bytes(text) == 12 * 3 + 1


def test_hindi_danda_ends_a_sentence_not_a_word_run() -> None:
    assert count_words("मैं घर जा रहा हूँ। तुम आओ।") == 7


def test_chars_are_counted_after_nfc_but_bytes_as_given() -> None:
    # U+095B (ज़) is a composition exclusion: NFC spells it ज + nukta, one code point more.
    text = "\u095bरूर"
    assert len(text) == 4
    assert count_chars(text) == 5
    assert count_bytes(text) == 4 * 3
    # And the other way: e + combining acute composes to é.
    assert count_chars("cafe\u0301") == 4
    assert count_bytes("cafe\u0301") == 6


def test_arabic_words_with_harakat() -> None:
    text = "كَتَبَ الوَلَدُ"
    # ك َ ت َ ب َ (6) + space + ا ل و َ ل َ د ُ (8)
    assert count_chars(text) == 15
    assert count_words(text) == 2
    assert count_bytes(text) == 14 * 2 + 1


def test_arabic_punctuation_and_arabic_indic_digits() -> None:
    assert count_words("مرحبا بالعالم، كيف حالك؟") == 4
    # ١٬٠٠٠ (1,000 with the Arabic thousands separator) is one word.
    assert count_words("عام ١٬٠٠٠") == 2


def test_chinese_counts_each_ideograph() -> None:
    text = "我爱北京天安门。"
    assert count_words(text) == 7
    assert count_chars(text) == 8
    assert count_bytes(text) == 24


def test_chinese_with_latin_and_digits_splits_at_script_changes() -> None:
    # 2024 / 年 / 我 / 学 / 了 / Python
    assert count_words("2024年我学了Python。") == 6


def test_japanese_mixing_kanji_kana_and_latin() -> None:
    # 私 / は / 東 / 京 / で / AI / の / 研 / 究 / をしています
    assert count_words("私は東京でAIの研究をしています。") == 10
    # コーヒー / を / 飲 / みます: the prolonged sound mark stays in its katakana run.
    assert count_words("コーヒーを飲みます") == 4
    assert count_words("すごーい") == 1
    assert count_chars("私は東京でAIの研究をしています。") == 17


def test_japanese_iteration_mark_counts_as_an_ideograph() -> None:
    # 人 / 々 / は
    assert count_words("人々は") == 3


def test_korean_counts_space_delimited_eojeol() -> None:
    assert count_words("안녕하세요, 세계!") == 2
    assert count_words("나는 학교에 갑니다.") == 3
    assert count_bytes("안녕하세요, 세계!") == 7 * 3 + 3


def test_korean_decomposed_jamo_compose_to_one_syllable() -> None:
    assert count_chars("\u1100\u1161") == 1  # ᄀ + ᅡ = 가
    assert count_words("\u1100\u1161\u1102\u1161") == 1


def test_numbers_and_punctuation() -> None:
    # Price / 1,000.50 / approx / 3.5
    assert count_words("Price: $1,000.50 (approx. 3.5%)!") == 4
    # e-mail / well-known / quoted: hyphens join, quotes and dashes do not.
    assert count_words("e-mail... — well-known; 'quoted'") == 3
    assert count_words("end.Next") == 2
    assert count_words("-- ... !!") == 0


def test_emoji_and_whitespace_are_not_words_but_are_characters() -> None:
    assert count_words("🙂 👍\n") == 0
    assert count_chars("🙂 👍\n") == 4
    assert count_bytes("🙂 👍\n") == 4 + 1 + 4 + 1


def test_zero_width_non_joiner_does_not_split_a_word() -> None:
    assert count_words("می\u200cخواهم") == 1  # Persian "I want"


def test_unspaced_southeast_asian_scripts_count_runs() -> None:
    # Documented undercount: a run of Thai is one word.
    assert count_words("ภาษาไทย ง่าย") == 2


def test_a_stray_combining_mark_still_makes_a_word() -> None:
    assert count_words(" \u0301a") == 1


@pytest.mark.parametrize("text", ["", " ", "\n\t"])
def test_empty_text_counts_zero_words(text: str) -> None:
    assert count_words(text) == 0


def test_text_stats_bundles_the_three_counts() -> None:
    assert text_stats("我爱北京天安门。") == TextStats(chars=8, words=7, bytes=24)
