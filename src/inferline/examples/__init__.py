"""The artifacts behind `examples/*.yaml`, made on the user's machine (nothing is downloaded)."""

import json
from pathlib import Path

from inferline.demo import train_iris

# Model folder name -> runtime class for the pipeline samples' models.
PIPELINE_MODELS = {
    "tfsimple": "TfSimple",
    "add10": "Add10",
    "mul10": "Mul10",
    "add20": "Add20",
    "conditional": "Conditional",
    "check": "Check",
    "outlier-error": "OutlierError",
}


def write_runtime_model(folder: Path, class_name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"implementation": f"inferline.examples.models.{class_name}"}
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def build_examples(root: Path) -> list[Path]:
    """Write every example artifact under `root`; returns the folders written."""
    written = [train_iris(root / "iris")]
    written += [write_runtime_model(root / name, cls) for name, cls in PIPELINE_MODELS.items()]
    return written
