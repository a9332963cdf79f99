"""The example models, made on the user's machine (nothing is downloaded).

`storageUri: example://<name>` names one of them (see `inferline.storage.examples`); the
model folder is written the first time a server asks for it.
"""

import json
from collections.abc import Callable
from pathlib import Path

IRIS_SETTINGS = {
    "name": "iris",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {"uri": "./model.joblib", "version": "v0.1.0"},
}

# The models the Seldon pipeline samples use -> their runtime class in `examples.models`.
PIPELINE_MODELS = {
    "tfsimple": "TfSimple",
    "add10": "Add10",
    "mul10": "Mul10",
    "add20": "Add20",
    "conditional": "Conditional",
    "check": "Check",
    "outlier-error": "OutlierError",
}


def train_iris(folder: Path) -> Path:
    """Write an iris LogisticRegression and its MLServer model-settings.json into `folder`."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    joblib.dump(model, folder / "model.joblib")
    (folder / "model-settings.json").write_text(json.dumps(IRIS_SETTINGS, indent=2) + "\n")
    return folder


def write_runtime_model(folder: Path, class_name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"implementation": f"inferline.examples.models.{class_name}"}
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def _cifar10(function: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        # Imported on use, so `python -m inferline.examples.cifar10` runs the module only once.
        from inferline.examples import cifar10

        return getattr(cifar10, function)(folder)

    return make


EXAMPLES: dict[str, Callable[[Path], Path]] = {
    "iris": train_iris,
    # Seldon's CIFAR-10 monitoring example, on synthetic images (see `examples.cifar10`).
    "cifar10-classifier": _cifar10("train_classifier"),
    "cifar10-outlier": _cifar10("train_outlier_detector"),
    "cifar10-drift": _cifar10("write_drift_detector"),
    **{
        name: (lambda folder, cls=class_name: write_runtime_model(folder, cls))
        for name, class_name in PIPELINE_MODELS.items()
    },
}
