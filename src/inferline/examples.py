"""The artifacts behind `examples/*.yaml`, made on the user's machine (nothing is downloaded)."""

from pathlib import Path

from inferline.demo import train_iris

EXAMPLES = {"iris": train_iris}


def build_examples(root: Path) -> list[Path]:
    """Write every example artifact under `root`; returns the folders written."""
    return [make(root / name) for name, make in EXAMPLES.items()]
