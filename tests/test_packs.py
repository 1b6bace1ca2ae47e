"""Prompt packs: the built-in parallel pack and held-out texts, and loading users' JSONL packs."""

from __future__ import annotations

import dataclasses
import json
import statistics
import unicodedata
from pathlib import Path

import pytest

from bench.workload.packs import (
    PackError,
    Prompt,
    builtin_languages,
    heldout_languages,
    load_heldout,
    load_pack,
)
from bench.workload.text import count_chars, count_words

REQUIRED_LANGUAGES = {"en", "es", "fr", "de", "pt", "ru", "zh", "ja", "ko", "ar", "hi", "sw"}
REQUIRED_KINDS = {
    "instruction", "summarise", "explain", "translate",
    "dialogue", "brainstorm", "reasoning", "rewrite",
}  # fmt: skip
EXPECTED_SCRIPT = {
    "en": "Latn", "es": "Latn", "fr": "Latn", "de": "Latn", "pt": "Latn", "sw": "Latn",
    "ru": "Cyrl", "zh": "Hans", "ja": "Jpan", "ko": "Kore", "ar": "Arab", "hi": "Deva",
}  # fmt: skip
# ISO 15924 code -> the first words of unicodedata.name() for the letters of that script.
SCRIPT_NAME_PREFIXES = {
    "Latn": ("LATIN",),
    "Cyrl": ("CYRILLIC",),
    "Arab": ("ARABIC",),
    "Deva": ("DEVANAGARI",),
    "Hans": ("CJK UNIFIED IDEOGRAPH",),
    "Jpan": ("CJK UNIFIED IDEOGRAPH", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC ITERATION"),
    "Kore": ("HANGUL",),
}


def _letters(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch).startswith("L")]


def _share_in_script(text: str, script: str) -> float:
    letters = _letters(text)
    prefixes = SCRIPT_NAME_PREFIXES[script]
    hits = sum(1 for ch in letters if unicodedata.name(ch, "").startswith(prefixes))
    return hits / len(letters)


@pytest.fixture(scope="module")
def pack() -> list[Prompt]:
    return load_pack("parallel")


@pytest.fixture(scope="module")
def by_lang(pack: list[Prompt]) -> dict[str, list[Prompt]]:
    grouped: dict[str, list[Prompt]] = {}
    for prompt in pack:
        grouped.setdefault(prompt.lang, []).append(prompt)
    return grouped


# --- the built-in parallel pack ---------------------------------------------------------------


def test_builtin_pack_has_at_least_8_prompts_in_at_least_12_languages(
    by_lang: dict[str, list[Prompt]],
) -> None:
    assert len(by_lang) >= 12
    assert REQUIRED_LANGUAGES <= set(by_lang)
    assert set(builtin_languages()) == set(by_lang)
    assert all(len(prompts) >= 8 for prompts in by_lang.values())


def test_every_builtin_language_has_every_prompt_id_in_the_same_order(
    by_lang: dict[str, list[Prompt]],
) -> None:
    english_ids = [p.id for p in by_lang["en"]]
    for lang, prompts in by_lang.items():
        assert [p.id for p in prompts] == english_ids, lang


def test_builtin_prompt_ids_cover_the_required_kinds(by_lang: dict[str, list[Prompt]]) -> None:
    kinds = {p.id.split("-", 1)[1] for p in by_lang["en"]}
    assert REQUIRED_KINDS <= kinds


def test_builtin_file_name_matches_the_lang_of_every_line() -> None:
    for lang in builtin_languages():
        assert {p.lang for p in load_pack("parallel", [lang])} == {lang}


def test_builtin_scripts_are_declared_and_match_the_text(
    by_lang: dict[str, list[Prompt]],
) -> None:
    for lang, prompts in by_lang.items():
        for prompt in prompts:
            assert prompt.script == EXPECTED_SCRIPT[lang], (lang, prompt.id)
            # Allow a few letters from elsewhere, e.g. a Latin brand name; no transliteration.
            share = _share_in_script(prompt.text, prompt.script)
            assert share >= 0.9, (lang, prompt.id, share)


def test_chinese_and_japanese_are_told_apart_by_kana(by_lang: dict[str, list[Prompt]]) -> None:
    japanese = "".join(p.text for p in by_lang["ja"])
    chinese = "".join(p.text for p in by_lang["zh"])
    assert any(unicodedata.name(ch, "").startswith("HIRAGANA") for ch in japanese)
    assert not any(unicodedata.name(ch, "").startswith(("HIRAGANA", "KATAKANA")) for ch in chinese)


def test_builtin_texts_are_nfc_and_trimmed(pack: list[Prompt]) -> None:
    for prompt in pack:
        assert unicodedata.is_normalized("NFC", prompt.text), (prompt.lang, prompt.id)
        assert prompt.text == prompt.text.strip(), (prompt.lang, prompt.id)


def test_builtin_prompts_have_parallel_lengths(by_lang: dict[str, list[Prompt]]) -> None:
    # Each language has its own characters-per-meaning ratio to English (Chinese about 0.3,
    # French about 1.2); a prompt far off its language's usual ratio lost or gained content.
    english = {p.id: count_chars(p.text) for p in by_lang["en"]}
    for lang, prompts in by_lang.items():
        ratios = {p.id: count_chars(p.text) / english[p.id] for p in prompts}
        usual = statistics.median(ratios.values())
        for prompt_id, ratio in ratios.items():
            assert 0.6 <= ratio / usual <= 1.5, (lang, prompt_id, ratio, usual)


def test_summarise_prompt_carries_a_passage_of_60_to_100_english_words(
    by_lang: dict[str, list[Prompt]],
) -> None:
    (summarise,) = [p for p in by_lang["en"] if p.id.endswith("-summarise")]
    _instruction, passage = summarise.text.split("\n\n")
    assert 60 <= count_words(passage) <= 100
    for lang, prompts in by_lang.items():
        (prompt,) = [p for p in prompts if p.id == summarise.id]
        assert prompt.text.count("\n\n") == 1, lang


def test_other_builtin_prompts_are_short(by_lang: dict[str, list[Prompt]]) -> None:
    for prompt in by_lang["en"]:
        if not prompt.id.endswith("-summarise"):
            assert 5 <= count_words(prompt.text) <= 60, prompt.id


def test_builtin_pack_is_found_without_the_source_tree_as_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "parallel").mkdir()  # a folder of the same name does not shadow the built-in
    monkeypatch.chdir(tmp_path)
    assert len(load_pack("parallel", ["en"])) >= 8


def test_language_filter_keeps_the_requested_order(by_lang: dict[str, list[Prompt]]) -> None:
    prompts = load_pack("parallel", ["hi", "en", "hi"])
    n = len(by_lang["en"])
    assert [p.lang for p in prompts] == ["hi"] * n + ["en"] * n


def test_unknown_language_names_the_pack_and_lists_its_languages() -> None:
    with pytest.raises(PackError) as info:
        load_pack("parallel", ["en", "xx"])
    message = str(info.value)
    assert "'xx'" in message and "parallel" in message
    assert ", ".join(builtin_languages()) in message


# --- held-out texts ---------------------------------------------------------------------------


def test_heldout_text_exists_for_every_builtin_language() -> None:
    assert set(heldout_languages()) >= set(builtin_languages())


@pytest.mark.parametrize("lang", sorted(REQUIRED_LANGUAGES))
def test_heldout_text_is_substantial_plain_text(lang: str) -> None:
    text = load_heldout(lang)
    assert count_chars(text) >= 400
    assert unicodedata.is_normalized("NFC", text)
    assert "<" not in text and "#" not in text  # no markup
    script = EXPECTED_SCRIPT[lang]
    assert _share_in_script(text, script) >= 0.9


def test_heldout_texts_are_parallel() -> None:
    english = load_heldout("en")
    assert 250 <= count_words(english) <= 400
    paragraphs = english.strip().split("\n\n")
    for lang in heldout_languages():
        text = load_heldout(lang)
        assert len(text.strip().split("\n\n")) == len(paragraphs), lang


def test_heldout_unknown_language_lists_the_available_ones() -> None:
    with pytest.raises(PackError, match=r"'xx'.*: ar, de, en"):
        load_heldout("xx")


def test_heldout_rejects_a_path_as_language() -> None:
    with pytest.raises(PackError):
        load_heldout("../parallel/en")


# --- users' packs -----------------------------------------------------------------------------


def _write(path: Path, lines: list[object]) -> Path:
    rendered = [x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines]
    path.write_text("\n".join(rendered) + "\n", encoding="utf-8")
    return path


def test_user_jsonl_file_loads_with_optional_script(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            {"id": "q1", "lang": "en", "text": "Hello there."},
            "",
            {"id": "q1", "lang": "hi", "text": "नमस्ते।", "script": "Deva", "note": "extra"},
        ],
    )
    assert load_pack(str(path)) == [
        Prompt(id="q1", lang="en", text="Hello there."),
        Prompt(id="q1", lang="hi", text="नमस्ते।", script="Deva"),
    ]
    assert load_pack(path, ["hi"]) == [Prompt(id="q1", lang="hi", text="नमस्ते।", script="Deva")]


def test_user_folder_pack_reads_every_jsonl_file_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.jsonl", [{"id": "q1", "lang": "fr", "text": "Bonjour."}])
    _write(tmp_path / "a.jsonl", [{"id": "q1", "lang": "de", "text": "Hallo."}])
    (tmp_path / "notes.txt").write_text("not a pack file", encoding="utf-8")
    assert [p.lang for p in load_pack(str(tmp_path))] == ["de", "fr"]


def test_user_file_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "lang": "en", "text": "One."}\r\n')
    assert load_pack(path) == [Prompt(id="a", lang="en", text="One.")]


def test_text_holding_a_line_separator_stays_on_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "ls.jsonl", [{"id": "a", "lang": "en", "text": "one\u2028two"}])
    assert load_pack(path)[0].text == "one\u2028two"


def _error(path: Path | str, languages: list[str] | None = None) -> str:
    with pytest.raises(PackError) as info:
        load_pack(str(path), languages)
    return str(info.value)


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [{"id": "a", "lang": "en", "text": "Fine."}, '{"id": "b", "lang": "en", "text": '],
    )
    message = _error(path)
    assert str(path) in message and "line 2" in message and "not valid JSON" in message


def test_missing_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "nokey.jsonl", ["", {"id": "a", "lang": "en"}])
    message = _error(path)
    assert str(path) in message and "line 2" in message and "'text'" in message


def test_non_object_line_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.jsonl", [["id", "lang", "text"]])
    assert "line 1" in _error(path)


def test_empty_text_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.jsonl", [{"id": "a", "lang": "en", "text": "  "}])
    assert "'text' must be a non-empty string" in _error(path)


def test_invalid_language_code_on_a_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "lang.jsonl", [{"id": "a", "lang": "English", "text": "Hi."}])
    message = _error(path)
    assert str(path) in message and "line 1" in message and "'English'" in message


def test_invalid_id_and_script_are_errors(tmp_path: Path) -> None:
    bad_id = _write(tmp_path / "id.jsonl", [{"id": "a b", "lang": "en", "text": "Hi."}])
    assert "id 'a b'" in _error(bad_id)
    bad_script = _write(
        tmp_path / "script.jsonl", [{"id": "a", "lang": "en", "text": "Hi.", "script": "latin"}]
    )
    assert "ISO 15924" in _error(bad_script)


def test_unknown_language_in_a_user_pack_lists_its_languages(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "two.jsonl",
        [{"id": "a", "lang": "en", "text": "Hi."}, {"id": "a", "lang": "sw", "text": "Habari."}],
    )
    message = _error(path, ["fr"])
    assert str(path) in message and "'fr'" in message and "en, sw" in message


def test_duplicate_id_and_language_names_both_places(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dup.jsonl",
        [
            {"id": "a", "lang": "en", "text": "One."},
            {"id": "a", "lang": "es", "text": "Uno."},
            {"id": "a", "lang": "en", "text": "Again."},
        ],
    )
    message = _error(path)
    assert f"{path}, line 3" in message and f"{path}, line 1" in message
    assert "duplicate" in message


def test_duplicate_across_files_of_a_folder_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", [{"id": "x", "lang": "en", "text": "One."}])
    _write(tmp_path / "b.jsonl", [{"id": "x", "lang": "en", "text": "Two."}])
    message = _error(tmp_path)
    assert "b.jsonl, line 1" in message and "a.jsonl, line 1" in message


def test_missing_path_empty_file_and_empty_folder_are_errors(tmp_path: Path) -> None:
    assert "neither a built-in pack" in _error(tmp_path / "nope.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    assert "holds no prompts" in _error(tmp_path / "blank.jsonl")
    (tmp_path / "empty").mkdir()
    assert "no *.jsonl files" in _error(tmp_path / "empty")


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"id": "a", "lang": "fr", "text": "été"}\n'.encode("latin-1"))
    assert "not UTF-8" in _error(path)


def test_pack_error_is_a_value_error_and_prompt_is_frozen() -> None:
    assert issubclass(PackError, ValueError)
    prompt = Prompt(id="a", lang="en", text="Hi.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompt.text = "changed"  # type: ignore[misc]
    assert hash(prompt) == hash(Prompt(id="a", lang="en", text="Hi."))
