"""Prompt packs: the built-in parallel multilingual pack, held-out texts, and users' JSONL packs.

A pack is JSONL, one prompt a line: {"id": ..., "lang": ..., "text": ..., "script": ...}
("script", an ISO 15924 code, is optional). It is either the name of a pack shipped inside this
package (`parallel`), a .jsonl file, or a folder whose *.jsonl files together form one pack.
Built-in data is read through importlib.resources, so it works from an installed wheel too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = [
    "BUILTIN_PACKS",
    "PackError",
    "Prompt",
    "builtin_languages",
    "heldout_languages",
    "load_heldout",
    "load_pack",
]

BUILTIN_PACKS = ("parallel",)

# Same rule as a prompt id in a config file, so a pack prompt can stand where a config prompt can.
_ID = re.compile(r"^[\w.-]{1,100}$")
# A BCP 47-like tag: "hi", "pt-BR", "zh-Hant", "yue".
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_SCRIPT = re.compile(r"^[A-Z][a-z]{3}$")  # ISO 15924: Latn, Deva, Hans, ...


class PackError(ValueError):
    """A pack that cannot be found or read; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Prompt:
    """One prompt of a pack; `id` is shared by the translations of the same prompt."""

    id: str
    lang: str
    text: str
    script: str | None = None


def _data_root() -> Traversable:
    return resources.files("bench.workload").joinpath("packs")


def _jsonl_files(folder: Traversable) -> list[Traversable]:
    return sorted(
        (f for f in folder.iterdir() if f.is_file() and f.name.endswith(".jsonl")),
        key=lambda f: f.name,
    )


def _resolve(ref: str | Path) -> tuple[str, list[Traversable | Path]]:
    """(a description of the pack for messages, its JSONL files in reading order)."""
    if isinstance(ref, str) and ref in BUILTIN_PACKS:
        return f"built-in pack '{ref}'", list(_jsonl_files(_data_root().joinpath(ref)))
    path = Path(ref).expanduser()
    if path.is_file():
        return f"pack {path}", [path]
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise PackError(f"Pack folder {path} holds no *.jsonl files.")
        return f"pack folder {path}", list(files)
    raise PackError(
        f"Pack '{ref}' is neither a built-in pack ({', '.join(BUILTIN_PACKS)}) "
        "nor an existing .jsonl file or folder."
    )


def _parse_line(where: str, raw: str) -> Prompt:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PackError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
    if not isinstance(obj, dict):
        raise PackError(f"{where}: expected a JSON object with id, lang and text.")
    for key in ("id", "lang", "text"):
        if key not in obj:
            raise PackError(f"{where}: missing key '{key}' (each line needs id, lang and text).")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise PackError(f"{where}: '{key}' must be a non-empty string.")
    if not _ID.match(obj["id"]):
        raise PackError(
            f"{where}: id {obj['id']!r} must be 1-100 letters, digits, '_', '.' or '-'."
        )
    if not _LANG.match(obj["lang"]):
        raise PackError(
            f"{where}: lang {obj['lang']!r} is not a language code such as 'en', 'hi' or 'pt-BR'."
        )
    script = obj.get("script")
    if script is not None and (not isinstance(script, str) or not _SCRIPT.match(script)):
        raise PackError(
            f"{where}: script {script!r} is not an ISO 15924 code such as 'Latn' or 'Deva'."
        )
    return Prompt(id=obj["id"], lang=obj["lang"], text=obj["text"], script=script)


def _read_file(file: Traversable | Path) -> Iterable[tuple[str, Prompt]]:
    try:
        content = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PackError(f"{file}: not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise PackError(f"{file}: cannot be read ({exc.strerror or exc}).") from None
    # Split on "\n" only: a JSON string may hold U+2028 and other characters splitlines() breaks at.
    for number, raw in enumerate(content.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if raw.strip():
            where = f"{file}, line {number}"
            yield where, _parse_line(where, raw.lstrip("\ufeff") if number == 1 else raw)


def load_pack(ref: str | Path, languages: list[str] | None = None) -> list[Prompt]:
    """The prompts of pack `ref`, limited to `languages` when given.

    `ref` is a built-in pack name (`parallel`) or a path to a .jsonl file or a folder of them;
    a name in BUILTIN_PACKS wins over a folder of the same name (write ./parallel for that).
    Prompts come grouped by language in the order of `languages` (file order without it), each
    group in file order. Raises PackError for a malformed line, a duplicate (id, lang) pair, an
    empty pack, or a requested language the pack lacks.
    """
    described, files = _resolve(ref)
    prompts: list[Prompt] = []
    seen: dict[tuple[str, str], str] = {}
    for file in files:
        for where, prompt in _read_file(file):
            key = (prompt.id, prompt.lang)
            if key in seen:
                raise PackError(
                    f"{where}: duplicate prompt id {prompt.id!r} for language {prompt.lang!r} "
                    f"(first at {seen[key]})."
                )
            seen[key] = where
            prompts.append(prompt)
    if not prompts:
        raise PackError(f"The {described} holds no prompts.")
    if languages is None:
        return prompts
    available = sorted({p.lang for p in prompts})
    wanted = list(dict.fromkeys(languages))
    missing = [lang for lang in wanted if lang not in available]
    if missing:
        raise PackError(
            f"The {described} has no prompts in {', '.join(map(repr, missing))}; "
            f"its languages are: {', '.join(available)}."
        )
    return [p for lang in wanted for p in prompts if p.lang == lang]


def builtin_languages() -> list[str]:
    """Language codes of the built-in `parallel` pack, sorted."""
    return sorted(f.name.removesuffix(".jsonl") for f in _jsonl_files(_data_root() / "parallel"))


def heldout_languages() -> list[str]:
    """Language codes that have a built-in held-out text, sorted."""
    folder = _data_root() / "heldout"
    return sorted(f.name.removesuffix(".txt") for f in folder.iterdir() if f.name.endswith(".txt"))


def load_heldout(lang: str) -> str:
    """The built-in held-out text in `lang` (the same content in every language), for
    tokenizer-independent quality (`bits_per_byte`)."""
    available = heldout_languages()
    if lang not in available:
        raise PackError(
            f"There is no built-in held-out text in {lang!r}; "
            f"the languages with one are: {', '.join(available)}."
        )
    return (_data_root() / "heldout" / f"{lang}.txt").read_text(encoding="utf-8")
