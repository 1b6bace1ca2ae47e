"""Put fake `powermetrics` and `sudo` executables in a directory, for PATH or a command line."""
from __future__ import annotations

import sys
from pathlib import Path

_CLI = Path(__file__).with_name("powermetrics_cli.py")


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def install_fake_powermetrics(bin_dir: Path) -> Path:
    """bin_dir/powermetrics, a Python script that runs powermetrics_cli.main()."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    return _script(
        bin_dir / "powermetrics",
        f"import runpy\nrunpy.run_path({str(_CLI)!r}, run_name='__main__')\n",
    )


def install_fake_sudo_without_rights(bin_dir: Path) -> Path:
    """bin_dir/sudo behaving as `sudo -n` does for a user with no NOPASSWD rule: refuse at once."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    return _script(
        bin_dir / "sudo",
        "import sys\nprint('sudo: a password is required', file=sys.stderr)\nsys.exit(1)\n",
    )
