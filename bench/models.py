"""Model references -> local GGUF files and their identity.

Three sources: a local `path`, a Hugging Face `repo` (downloaded once into the Hub cache), and a
`package` that ships the file (found through the installed distributions' metadata, never
copied). Locating never touches the network and never imports or runs anything: a `package` is
looked up in the RECORD of the distribution that provides it, so a same-named module in the
working folder is never executed. `fetch` downloads, and only for Hub models.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import stat
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends.formats import check_hf_folder, folder_files, model_format
from bench.files import cache_dir, sha256_of
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


def check_local_file(p: Path, what: str, gguf: bool = True) -> str | None:
    """Why `p` cannot be loaded as a GGUF model, or None: it must exist, be a regular file (not
    a folder, FIFO or device), be readable and (unless `gguf` is False) start with the GGUF
    magic."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return f"{what} {p} does not exist; check the path or download the model"
    except PermissionError:
        return f"{what} {p} cannot be reached (permission denied); check its permissions"
    except (OSError, ValueError) as e:
        return f"{what} {p} is not a usable path ({getattr(e, 'strerror', None) or e})"
    if stat.S_ISDIR(st.st_mode):
        return f"{what} {p} is a folder, not a GGUF file; point 'path' at the .gguf file inside"
    if stat.S_ISFIFO(st.st_mode):
        # Opening a FIFO blocks until a writer comes: never open one.
        return f"{what} {p} is a named pipe (FIFO), not a model file; give the .gguf file itself"
    if not stat.S_ISREG(st.st_mode):
        return f"{what} {p} is not a regular file (a device or socket); give the .gguf file"
    try:
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open does not hang.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return f"{what} {p} cannot be read ({e.strerror}); check its permissions"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{what} {p} is not a regular file; give the .gguf file"
        head = os.read(fd, 4)
    except OSError as e:
        return f"{what} {p} cannot be read ({e.strerror}); check the file"
    finally:
        os.close(fd)
    if gguf and head != GGUF_MAGIC:
        return (
            f"{what} {p} is not a GGUF file (it starts with {head!r}, not b'GGUF'); "
            "bench runs llama.cpp's GGUF models"
        )
    return None



def _check_local(p: Path, fmt: str, what: str) -> str | None:
    """The check for the model's format: GGUF magic, an RWKV .pth, or a model folder."""
    if fmt == "rwkv":
        from bench.backends.rwkv.checkpoint import looks_like_pth

        return looks_like_pth(p)
    if fmt == "hf":
        return check_hf_folder(p)
    return check_local_file(p, what)


def pip_name(variant: ModelVariant) -> str:
    spec = variant.spec
    return spec.pip or (spec.package or "").replace("_", "-")


def locate(variant: ModelVariant) -> Located:
    spec = variant.spec
    if spec.path is not None:
        p = Path(os.path.expanduser(spec.path))
        problem = _check_local(p, model_format(spec), "model file")
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
    from bench.synthetic import (
        SyntheticError,
        cached_path,
        describe,
        n_params,
        resolve_shape,
        stored_quant,
    )

    assert variant.spec.synthetic is not None
    try:
        path = cached_path(variant.spec.synthetic, variant.quant, model_format(variant.spec))
        what = describe(variant.spec.synthetic)
    except SyntheticError as e:
        return Located(variant, None, None, f"model {variant.spec.id!r}: {e}")
    if path is not None:
        return Located(variant, path, _size(path),
                       _check_local(path, model_format(variant.spec), "synthetic model file"))
    # At the stored precision (F16 GGUF, an RWKV's bf16) the file is two bytes a parameter, so
    # the time estimate can size it before it exists; a quantized level's size is not known.
    shape = resolve_shape(variant.spec.synthetic)
    size = 2 * n_params(shape) if variant.quant.upper() == stored_quant(shape) else None
    return Located(
        variant, None, size,
        f"{what} at {variant.quant} is written to the cache on first use",
        downloadable=True,
    )


def _locate_quantized(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.quantize_from is not None
    src = Path(os.path.expanduser(spec.quantize_from))
    problem = check_local_file(src, "quantize_from source")
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
        if p.is_dir():
            return sum(f.stat().st_size for f in folder_files(p)) or None
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


@dataclass(frozen=True)
class _Installed:
    """Where an installed distribution put a package, read from its metadata (RECORD)."""

    folder: Path  # the package's folder
    files: tuple[str, ...]  # paths inside the package folder, '/'-separated


def _installed_package(package: str) -> _Installed | None:
    """The package's folder and files from the metadata of the distribution that installed it;
    None when no installed distribution provides it. Nothing is imported."""
    top = package.split(".")[0]
    prefix = package.replace(".", "/") + "/"
    try:
        dist_names = importlib.metadata.packages_distributions().get(top, [])
    except Exception:  # broken metadata of another package must not stop us
        dist_names = []
    for name in dict.fromkeys(dist_names):
        try:
            dist = importlib.metadata.distribution(name)
            files = dist.files or []
        except Exception:  # an unreadable distribution provides nothing
            files = []
        inside = tuple(str(f)[len(prefix):] for f in files if str(f).startswith(prefix))
        if inside:
            folder = Path(str(dist.locate_file(prefix.rstrip("/"))))
            return _Installed(folder, inside)
    return None


def _has_assembler(installed: _Installed) -> bool:
    """Whether the package defines `assemble()`, read from its source without running it."""
    if "__init__.py" not in installed.files:
        return False
    try:
        tree = ast.parse((installed.folder / "__init__.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    return any(
        isinstance(n, ast.FunctionDef) and n.name == "assemble" for n in tree.body
    )


def _locate_package(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.package is not None and variant.file is not None
    installed = _installed_package(spec.package)
    if installed is None:
        return Located(
            variant,
            None,
            None,
            f"model {spec.id!r} comes from the Python package {spec.package!r}, which is not "
            f"installed; install it with: pip install {pip_name(variant)}",
        )
    p = installed.folder / variant.file
    if variant.file in installed.files:
        problem = check_local_file(p, f"package {spec.package!r} file")
        return Located(variant, p if problem is None else None, _size(p), problem)
    if _has_assembler(installed):
        # Some packages ship a model in chunks and assemble it on request (PyPI's size limit).
        built = _assembled_path(variant.file)
        if built.is_file():
            return Located(variant, built, _size(built), check_local_file(built, "assembled file"))
        return Located(
            variant, None, None,
            f"package {spec.package!r} assembles {variant.file} from its chunks on first use",
            downloadable=True,
        )
    ggufs = sorted(f for f in installed.files if f.endswith(".gguf") and "/" not in f)
    return Located(
        variant, None, None,
        f"package {spec.package!r} has no file {variant.file!r}; "
        f"files there: {', '.join(ggufs) or 'none'}",
    )


def _assembler(package: str) -> Any:
    """The package's `assemble`, imported from where its distribution installed it (not from
    whatever a same-named module earlier on sys.path would be). Only `fetch` calls this."""
    installed = _installed_package(package)
    if installed is None or not _has_assembler(installed):
        return None
    mod = sys.modules.get(package)
    if not isinstance(mod, types.ModuleType) or Path(
        getattr(mod, "__file__", "") or ""
    ).resolve() != (installed.folder / "__init__.py").resolve():
        spec = importlib.util.spec_from_file_location(
            package, installed.folder / "__init__.py",
            submodule_search_locations=[str(installed.folder)],
        )
        if spec is None or spec.loader is None:
            return None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[package] = mod
        spec.loader.exec_module(mod)
    fn = getattr(mod, "assemble", None)
    return fn if callable(fn) else None


def _assembled_path(file: str) -> Path:
    return cache_dir("packages", Path(file).name)


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
    except Exception as e:
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
    found = unsplit or shards
    return found[0] if found else None


def _locate_hub_snapshot(variant: ModelVariant) -> Located:
    """A transformers model repository: its snapshot folder in the Hub cache, if complete."""
    spec = variant.spec
    hub = _hub()
    if hub is None:
        return Located(variant, None, None, f"{spec.repo} needs the Hub client: pip install "
                       "'bench[hf]'")
    try:
        folder = Path(hub.snapshot_download(spec.repo, revision=spec.revision,
                                            local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or partly): it downloads on `bench run`
        return Located(variant, None, None, f"{spec.repo} is not downloaded yet; bench "
                       "downloads it on `bench run`", downloadable=True)
    problem = check_hf_folder(folder)
    return Located(variant, folder if problem is None else None, _size(folder), problem)


def _locate_hub(variant: ModelVariant) -> Located:
    spec = variant.spec
    assert spec.repo is not None
    if model_format(spec) == "hf":
        return _locate_hub_snapshot(variant)
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
    problem = _check_local(path, model_format(spec), "cached file")
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
            return build(spec.synthetic, variant.quant, fmt=model_format(spec))
        except (SyntheticError, OSError) as e:
            raise ModelError(f"could not build {spec.id} {variant.quant}: {e}") from None
    if not loc.downloadable or spec.repo is None:
        raise ModelError(loc.problem or f"model {spec.id!r} is not available")
    hub = _hub()
    assert hub is not None
    file = variant.file
    try:
        if model_format(spec) == "hf":
            # Weights, config and tokenizer only: a repository may also hold GGUF or ONNX copies.
            return Path(hub.snapshot_download(
                spec.repo, revision=spec.revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py",
                                "*.tiktoken"],
            ))
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
    problem = _check_local(path, model_format(spec), "downloaded file")
    if problem:
        raise ModelError(problem)
    return path


# -- identity --------------------------------------------------------------------------------


def file_identity(path: Path) -> dict[str, Any]:
    if path.is_dir():
        # A transformers model folder: one digest over each file's name and digest.
        files = folder_files(path)
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256_of(f)}\n".encode())
        size = sum(f.stat().st_size for f in files)
        return {"path": str(path), "size_bytes": size, "sha256": h.hexdigest()}
    return {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_of(path)}
