"""Model references -> local GGUF files and their identity.

Three sources: a local `path`, a Hugging Face `repo` (downloaded once into the Hub cache), and a
`package` that ships the file (found with importlib.resources, never copied). Locating never
touches the network; `fetch` downloads, and only for Hub models.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sweep import ModelVariant

GGUF_MAGIC = b"GGUF"


class ModelError(Exception):
    """A model that cannot be used; the message says what is missing and how to get it."""


@dataclass
class Located:
    variant: ModelVariant
    path: Path | None  # local file, when there is one
    size_bytes: int | None
    problem: str | None  # why it is not usable now, with the fix
    downloadable: bool = False

    @property
    def ok(self) -> bool:
        served = self.variant.spec.served is not None
        return (self.path is not None or served) and self.problem is None


def _check_file(p: Path, what: str) -> str | None:
    if p.is_dir():
        return f"{what} {p} is a folder, not a GGUF file; point 'path' at the .gguf file inside"
    if not p.exists():
        return f"{what} {p} does not exist; check the path or download the model"
    try:
        with p.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"{what} {p} cannot be read ({e.strerror}); check its permissions"
    if head != GGUF_MAGIC:
        return (
            f"{what} {p} is not a GGUF file (it starts with {head!r}, not b'GGUF'); "
            "bench runs llama.cpp's GGUF models"
        )
    return None


def pip_name(variant: ModelVariant) -> str:
    spec = variant.spec
    return spec.pip or (spec.package or "").replace("_", "-")


def locate(variant: ModelVariant) -> Located:
    spec = variant.spec
    if spec.path is not None:
        p = Path(os.path.expanduser(spec.path))
        problem = _check_file(p, "model file")
        return Located(variant, p if problem is None else None, _size(p), problem)
    if spec.package is not None:
        return _locate_package(variant)
    if spec.served is not None:
        return Located(variant, None, None, None)
    if spec.quantize_from is not None:
        return _locate_quantized(variant)
    if spec.synthetic is not None:
        return _locate_synthetic(variant)
    return _locate_hub(variant)


def _locate_synthetic(variant: ModelVariant) -> Located:
    from bench.synthetic import SyntheticError, cached_path, describe

    assert variant.spec.synthetic is not None
    try:
        path = cached_path(variant.spec.synthetic, variant.quant)
        what = describe(variant.spec.synthetic)
    except SyntheticError as e:
        return Located(variant, None, None, f"model {variant.spec.id!r}: {e}")
    if path is not None:
        return Located(variant, path, _size(path), _check_file(path, "synthetic model file"))
    return Located(
        variant, None, None,
        f"{what} at {variant.quant} is written to the cache on first use",
        downloadable=True,
    )


def _locate_quantized(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.quantize_from is not None
    src = Path(os.path.expanduser(spec.quantize_from))
    problem = _check_file(src, "quantize_from source")
    if problem:
        return Located(variant, None, None, problem)
    return Located(
        variant, None, None,
        f"{variant.quant} is built from {src} with llama.cpp's quantizer on first use "
        "(then cached)",
        downloadable=True,
    )


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


def _locate_package(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.package is not None and variant.file is not None
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return Located(
            variant,
            None,
            None,
            f"model {spec.id!r} comes from the Python package {spec.package!r}, which is not "
            f"installed; install it with: pip install {pip_name(variant)}",
        )
    try:
        res = importlib.resources.files(spec.package) / variant.file
        p = Path(str(res))
    except (ModuleNotFoundError, TypeError) as e:
        return Located(variant, None, None, f"cannot look inside package {spec.package!r}: {e}")
    problem = _check_file(p, f"package {spec.package!r} file")
    if problem and not p.exists() and _assembler(spec.package) is not None:
        # Some packages ship a model in chunks and assemble it on request (PyPI's size limit).
        built = _assembled_path(variant.file)
        if built.is_file():
            return Located(variant, built, _size(built), _check_file(built, "assembled file"))
        return Located(
            variant, None, None,
            f"package {spec.package!r} assembles {variant.file} from its chunks on first use",
            downloadable=True,
        )
    if problem and not p.exists():
        problem = (
            f"package {spec.package!r} has no file {variant.file!r}; "
            f"files there: {', '.join(_gguf_names(p.parent)) or 'none'}"
        )
    return Located(variant, p if problem is None else None, _size(p), problem)


def _assembler(package: str) -> Any:
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return None
    fn = getattr(mod, "assemble", None)
    return fn if callable(fn) else None


def _assembled_path(file: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "bench" / "packages" / Path(file).name


def _assemble(variant: ModelVariant) -> Path:
    """Assemble a chunked package model once into bench's cache (temp file, then rename)."""
    spec = variant.spec
    assert spec.package is not None and variant.file is not None
    target = _assembled_path(variant.file)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        built = Path(_assembler(spec.package)(output_path=tmp, overwrite=True))
        if built.name != tmp.name:
            raise ModelError(
                f"package {spec.package!r} assembled {built.name}, not {variant.file}"
            )
        os.replace(tmp, target)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - a third-party assembler: name whatever went wrong
        raise ModelError(f"package {spec.package!r} could not assemble {variant.file}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _gguf_names(folder: Path) -> list[str]:
    try:
        return sorted(x.name for x in folder.iterdir() if x.suffix == ".gguf")
    except OSError:
        return []


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        return None
    return huggingface_hub


def _hub_cache_dir(repo: str) -> Path:
    hub = _hub()
    if hub is not None:
        from huggingface_hub import constants

        base = Path(constants.HF_HUB_CACHE)
    else:
        base = Path(
            os.environ.get(
                "HF_HUB_CACHE",
                Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub",
            )
        )
    return base / ("models--" + repo.replace("/", "--"))


def _cached_files(repo: str) -> list[Path]:
    snaps = _hub_cache_dir(repo) / "snapshots"
    if not snaps.is_dir():
        return []
    return sorted(p for p in snaps.glob("*/**/*.gguf") if p.exists())


def quant_file_match(names: list[str], quant: str) -> str | None:
    """Pick the file for a quantization from a repository's file names (first shard if split)."""
    pat = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.IGNORECASE)
    hits = sorted(n for n in names if n.lower().endswith(".gguf") and pat.search(Path(n).name))
    shards = [n for n in hits if re.search(r"-0*1-of-\d+\.gguf$", n)]
    unsplit = [n for n in hits if not re.search(r"-\d+-of-\d+\.gguf$", n)]
    return (unsplit or shards or [None])[0]


def _locate_hub(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.repo is not None
    file = variant.file
    if file is None:
        cached = _cached_files(spec.repo)
        file = quant_file_match([p.name for p in cached], variant.quant)
        if file is None:
            return Located(
                variant,
                None,
                None,
                f"{spec.repo} {variant.quant} is not downloaded yet; its file is picked from the "
                "repository's listing at download time",
                downloadable=True,
            )
    hub = _hub()
    path: Path | None = None
    if hub is not None:
        hit = hub.try_to_load_from_cache(spec.repo, file, revision=spec.revision)
        if isinstance(hit, str):
            path = Path(hit)
    else:
        for p in _cached_files(spec.repo):
            if p.name == Path(file).name:
                path = p
    if path is None:
        how = (
            "bench downloads it on `bench run`"
            if hub is not None
            else "install the Hub client first: pip install 'bench[hf]'"
        )
        return Located(
            variant,
            None,
            None,
            f"{spec.repo}/{file} is not downloaded yet; {how}",
            downloadable=hub is not None,
        )
    problem = _check_file(path, "cached file")
    return Located(variant, path if problem is None else None, _size(path), problem)


def remote_size(variant: ModelVariant) -> int | None:
    """Ask the Hub for a file's size (network); None when it cannot say."""
    hub = _hub()
    spec = variant.spec
    if hub is None or spec.repo is None or variant.file is None:
        return None
    try:
        infos = hub.HfApi().get_paths_info(spec.repo, [variant.file], revision=spec.revision)
    except Exception:  # noqa: BLE001 - any network or Hub failure means "not known"
        return None
    return next((getattr(i, "size", None) for i in infos), None)


def fetch(variant: ModelVariant) -> Path | None:
    """Local path of a model, downloading Hub models into the Hub cache once; None for a
    model that only a server knows (`served`)."""
    loc = locate(variant)
    if loc.ok:
        return loc.path
    spec = variant.spec
    if loc.downloadable and spec.package is not None:
        return _assemble(variant)
    if loc.downloadable and spec.quantize_from is not None:
        from bench.quantize import QuantizeError, quantize

        try:
            return quantize(
                Path(os.path.expanduser(spec.quantize_from)), variant.quant,
                imatrix=Path(os.path.expanduser(spec.imatrix)) if spec.imatrix else None,
            )
        except (QuantizeError, OSError) as e:
            raise ModelError(f"could not build {spec.id} {variant.quant}: {e}") from None
    if loc.downloadable and spec.synthetic is not None:
        from bench.synthetic import SyntheticError, build

        try:
            return build(spec.synthetic, variant.quant)
        except (SyntheticError, OSError) as e:
            raise ModelError(f"could not build {spec.id} {variant.quant}: {e}") from None
    if not loc.downloadable or spec.repo is None:
        raise ModelError(loc.problem or f"model {spec.id!r} is not available")
    hub = _hub()
    assert hub is not None
    file = variant.file
    try:
        if file is None:
            names = hub.list_repo_files(spec.repo, revision=spec.revision)
            file = quant_file_match(names, variant.quant)
            if file is None:
                ggufs = [n for n in names if n.endswith(".gguf")]
                raise ModelError(
                    f"{spec.repo} has no GGUF file for quantization {variant.quant!r}; "
                    f"it has: {', '.join(ggufs[:12]) or 'no GGUF files'}"
                )
        path = Path(hub.hf_hub_download(spec.repo, file, revision=spec.revision))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the Hub client raises many types; name the cause
        raise ModelError(
            f"could not download {spec.repo}/{file or variant.quant} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}); check the network, the "
            "repository name and, for gated models, `huggingface-cli login`"
        ) from None
    problem = _check_file(path, "downloaded file")
    if problem:
        raise ModelError(problem)
    return path


# -- identity --------------------------------------------------------------------------------


def _hash_cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "bench" / "sha256.json"


def sha256_of(path: Path) -> str:
    """sha256 of a file, cached by (real path, size, mtime) so 7B files are hashed once."""
    real = path.resolve()
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _hash_cache_path()
    cache: dict[str, str] = {}
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with real.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a cache we cannot write only costs time
    return digest


def file_identity(path: Path) -> dict[str, Any]:
    return {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_of(path)}
