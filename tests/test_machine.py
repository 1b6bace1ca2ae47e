"""Machine facts: the GPUs named by the NVIDIA driver's procfs files, and the fingerprint that
decides which runs compare. The temp tree stands in for /proc/driver/nvidia/gpus, which the
NVIDIA kernel driver writes (one folder per GPU, an `information` file with a `Model:` line)."""
from __future__ import annotations

from pathlib import Path

from bench.machine import machine_facts, machine_id, nvidia_gpus

INFORMATION = """Model: \t\t NVIDIA H200
IRQ:   \t\t 180
GPU UUID: \t GPU-00000000-1111-2222-3333-444444444444
Bus Type: \t PCIe
"""


def fake_proc(root: Path, models: list[str]) -> Path:
    for i, model in enumerate(models):
        folder = root / f"0000:{i:02x}:00.0"
        folder.mkdir(parents=True)
        (folder / "information").write_text(INFORMATION.replace("NVIDIA H200", model))
    return root


def test_gpus_are_read_from_the_drivers_information_files(tmp_path):
    root = fake_proc(tmp_path / "gpus", ["NVIDIA H200", "NVIDIA GeForce RTX 4090"])
    assert nvidia_gpus(root) == ["NVIDIA H200", "NVIDIA GeForce RTX 4090"]
    assert nvidia_gpus(tmp_path / "absent") == []  # no NVIDIA driver: none, no error


def test_the_same_cpu_with_another_gpu_is_another_machine(tmp_path):
    facts = machine_facts()
    without = machine_id({**facts, "gpus": []})
    h200 = machine_id({**facts, "gpus": nvidia_gpus(fake_proc(tmp_path / "a", ["NVIDIA H200"]))})
    rtx = machine_id({**facts, "gpus": nvidia_gpus(
        fake_proc(tmp_path / "b", ["NVIDIA GeForce RTX 4090"]))})
    assert len({without, h200, rtx}) == 3
    # The order GPUs are listed in does not make another machine.
    assert machine_id({**facts, "gpus": ["b", "a"]}) == machine_id({**facts, "gpus": ["a", "b"]})
    # This machine's facts carry its GPU list, and its id is the fingerprint of those facts.
    assert isinstance(facts["gpus"], list) and facts["id"] == machine_id(facts)
