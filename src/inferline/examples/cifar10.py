"""The CIFAR-10 monitoring example of Seldon Core 2 (a classifier, an outlier detector and a drift
detector), made here on first use with nothing downloaded.

CIFAR-10 itself cannot be fetched, so the images are synthetic but shaped like it: FP32
[N, 32, 32, 3] in [0, 1], ten classes, each a fixed blocky colour pattern (4 x 4 random colour
blocks of 8 x 8 pixels) plus pixel noise. A scikit-learn classifier learns them perfectly;
what the example shows is the monitoring around it, not the vision.

- `example://cifar10-classifier`: LogisticRegression on the flattened pixels, served by
  `Classifier` below, which answers the class probabilities as `fc10` (FP32 [N, 10]), the output
  name of Seldon's Triton CIFAR-10 model (its input is `input_1`; any one input name works here).
- `example://cifar10-outlier`: scikit-learn's LocalOutlierFactor (novelty=True) on the flattened
  training images, served by the outlier runtime: `is_outlier` per image.
- `example://cifar10-drift`: the drift runtime with the training images as reference: a
  Kolmogorov-Smirnov test per pixel and channel, Bonferroni-corrected, on the batch of images a
  request holds (the pipeline's `batch: {size: 20}` makes that 20).

`images`, `brighter` and `corrupted` make the inputs the example and its tests send;
`python -m inferline.examples.cifar10 DIR [--count N] [--seed S] [--brighter | --corrupted]`
writes them as V2 JSON requests, one image per file (DIR/image-00.json, ...).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from inferline.protocol.errors import BadRequest, ModelLoadError
from inferline.protocol.types import InferenceRequest, InferenceResponse, Tensor
from inferline.runtimes.base import Runtime

IMAGE_SHAPE = (32, 32, 3)
CLASSES = 10
TRAIN_IMAGES = 500
NOISE = 0.1  # standard deviation of the per-pixel noise of every image
OUTPUT = "fc10"
SEED = 0


def _templates() -> np.ndarray:
    """One pattern per class: 4 x 4 colour blocks, each 8 x 8 pixels."""
    blocks = np.random.default_rng(SEED).uniform(0.15, 0.85, size=(CLASSES, 4, 4, 3))
    return np.kron(blocks, np.ones((1, 8, 8, 1)))


def images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of the training distribution (FP32 [count, 32, 32, 3]) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    pixels = _templates()[labels] + rng.normal(0, NOISE, size=(count, *IMAGE_SHAPE))
    return np.clip(pixels, 0, 1).astype(np.float32), labels


def brighter(pixels: np.ndarray, amount: float = 0.25) -> np.ndarray:
    """The images made brighter (a covariate shift, like CIFAR-10-C's brightness corruption)."""
    return np.clip(pixels + amount, 0, 1).astype(np.float32)


def corrupted(pixels: np.ndarray, seed: int = 1) -> np.ndarray:
    """The images drowned in heavy noise: clearly not what the models were trained on."""
    noise = np.random.default_rng(seed).normal(0, 0.5, size=pixels.shape)
    return np.clip(pixels + noise, 0, 1).astype(np.float32)


def _training_images() -> tuple[np.ndarray, np.ndarray]:
    return images(TRAIN_IMAGES, SEED)


def _write_settings(folder: Path, settings: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def train_classifier(folder: Path) -> Path:
    import joblib
    from sklearn.linear_model import LogisticRegression

    pixels, labels = _training_images()
    model = LogisticRegression(max_iter=200).fit(pixels.reshape(len(pixels), -1), labels)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    return _write_settings(
        folder,
        {
            "name": "cifar10",
            "implementation": "inferline.examples.cifar10.Classifier",
            "inputs": [{"name": "input_1", "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, CLASSES]}],
        },
    )


def train_outlier_detector(folder: Path) -> Path:
    import joblib
    from sklearn.neighbors import LocalOutlierFactor

    # LOF compares an image's distance to its nearest training images with theirs to their own
    # neighbours, so it flags noise and shifted images while every class of the training
    # distribution stays well inside its default cut-off (a ratio of 1.5).
    pixels, _ = _training_images()
    detector = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(pixels.reshape(len(pixels), -1))
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(detector, folder / "model.joblib")
    return _write_settings(folder, {"name": "cifar10-outlier", "implementation": "outlier"})


def write_drift_detector(folder: Path) -> Path:
    pixels, _ = _training_images()
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x_ref.npy", pixels)
    # No `batch_size` here: the pipeline step's `batch: {size: 20}` already sends 20 images at a
    # time, and buffering 20 of those again would test only every 400th image.
    return _write_settings(
        folder,
        {
            "name": "cifar10-drift",
            "implementation": "drift",
            "parameters": {"extra": {"test": "ks", "p_val": 0.05, "correction": "bonferroni"}},
        },
    )


class Classifier(Runtime):
    """A scikit-learn classifier of [N, 32, 32, 3] images answering class probabilities."""

    async def load(self) -> None:
        import joblib

        path = self.artifact_path()
        path = path / "model.joblib" if path.is_dir() else path
        try:
            self.model = joblib.load(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model '{self.name}': cannot load {path}: {exc}") from None

    async def predict(self, request: InferenceRequest) -> InferenceResponse:
        if len(request.inputs) != 1:
            raise BadRequest(
                f"model '{self.name}' takes one input of images [N, 32, 32, 3], "
                f"got {len(request.inputs)} inputs"
            )
        tensor = request.inputs[0]
        pixels = tensor.data
        if pixels.dtype.kind not in "biuf" or tuple(pixels.shape[1:]) != IMAGE_SHAPE:
            raise BadRequest(
                f"model '{self.name}': input '{tensor.name}' must be images of numbers shaped "
                f"[N, 32, 32, 3], not {tensor.datatype} {list(pixels.shape)}"
            )
        probabilities = self.model.predict_proba(pixels.reshape(len(pixels), -1))
        return InferenceResponse(
            model_name=self.name,
            outputs=[Tensor.from_numpy(OUTPUT, probabilities.astype(np.float32))],
        )


def request_json(image: np.ndarray) -> dict:
    """One image as a V2 JSON request, named as Seldon's CIFAR-10 model names its input."""
    return {
        "inputs": [
            {
                "name": "input_1",
                "datatype": "FP32",
                "shape": [1, *IMAGE_SHAPE],
                "data": image.ravel().tolist(),
            }
        ]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m inferline.examples.cifar10",
        description="Write CIFAR-10-shaped images as V2 JSON requests, one image per file.",
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="0 makes the training images")
    change = parser.add_mutually_exclusive_group()
    change.add_argument("--brighter", action="store_true", help="shifted: drift")
    change.add_argument("--corrupted", action="store_true", help="heavy noise: outliers")
    args = parser.parse_args(argv)
    pixels, _ = images(args.count, args.seed)
    if args.brighter:
        pixels = brighter(pixels)
    elif args.corrupted:
        pixels = corrupted(pixels)
    args.folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(pixels):
        path = args.folder / f"image-{index:02d}.json"
        path.write_text(json.dumps(request_json(image)))
    print(f"wrote {len(pixels)} requests to {args.folder}")


if __name__ == "__main__":
    main()
