"""Install hints that fit how bench was installed: the running interpreter's pip, the checkout
bench was installed from in editable mode, pipx's own command; never a bare `pip install`
that would land in another environment (or fetch an unrelated `bench` from PyPI).

Domain modules write plain hints ("pip install 'bench[report]'"); everything the CLI shows
passes through `fit_install_hints`, which rewrites them for this installation.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path


def _shown_path(p: Path) -> str:
    """A path as a person would type it here: relative to the current folder when inside it."""
    try:
        rel = p.relative_to(Path.cwd())
    except ValueError:
        return str(p)
    return str(rel) if rel.parts else "."


@lru_cache(maxsize=1)
def _pipx_package() -> str | None:
    # pipx keeps one virtual environment per application under .../pipx/venvs/<name>.
    parts = Path(sys.prefix).parts
    for i in range(len(parts) - 2):
        if parts[i] == "pipx" and parts[i + 1] == "venvs":
            return parts[i + 2]
    return None


def pip_command() -> str:
    """The pip of the environment bench runs in."""
    pipx = _pipx_package()
    if pipx:
        return f"pipx runpip {pipx}"
    exe = Path(sys.executable)
    # Keep the venv's own path (a symlink to the base interpreter must not be resolved: that
    # would install outside the venv).
    return f"{shlex.quote(_shown_path(exe))} -m pip"


@lru_cache(maxsize=1)
def source_checkout() -> Path | None:
    """The folder bench is installed from in editable mode (or run from, via PYTHONPATH)."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            text = distribution("bench").read_text("direct_url.json")
        except PackageNotFoundError:
            text = None
        if text:
            info = json.loads(text)
            url = str(info.get("url", ""))
            if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
                return Path(url.removeprefix("file://"))
            return None
    except (OSError, ValueError):
        pass
    import bench

    root = Path(bench.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def bench_requirement(extras: str) -> str:
    """What to give pip for bench with `extras` ("report" or "llama,hf")."""
    checkout = source_checkout()
    if checkout is not None:
        return f"-e {shlex.quote(f'{_shown_path(checkout)}[{extras}]')}"
    return shlex.quote(f"bench[{extras}]")


def pip_install(*requirements: str) -> str:
    return f"{pip_command()} install {' '.join(requirements)}"


_BENCH_EXTRA = re.compile(r"""(['"]?)bench\[([\w,.-]+)\]\1""")
_BARE_PIP = re.compile(r"(?<![\w/.-])(?<!-m )pip3? install\b")


def _fit_extra(m: re.Match[str]) -> str:
    before = m.string[: m.start()]
    # Already fitted: an editable requirement (`-e 'bench[x]'`) or the tail of a checkout's
    # path (`-e '/src/bench[x]'`) stays as it is, so fitting a message twice changes nothing.
    if before.endswith("-e ") or (before and (before[-1].isalnum() or before[-1] in "/\\._-'\"")):
        return m.group(0)
    return bench_requirement(m.group(2))


def fit_install_hints(text: str) -> str:
    """Rewrite every `pip install ...` in a message for this installation (idempotent)."""
    if "pip" not in text:
        return text
    text = _BENCH_EXTRA.sub(_fit_extra, text)
    return _BARE_PIP.sub(lambda m: f"{pip_command()} install", text)

