"""Run by the Alibi virtualenv's python: train and save the detectors and the explainer the
tests serve, each in a model folder with its model-settings.json.

Usage: python make_artifacts.py OUT_DIR. Needs alibi-detect, alibi and scikit-learn; no
TensorFlow or torch. The data is seeded, so the folders are the same on every run.
"""

import json
import sys
from pathlib import Path

import numpy as np
import spacy
from alibi.explainers import AnchorImage, AnchorTabular, AnchorText, KernelShap
from alibi_detect.cd import ChiSquareDrift, FETDriftOnline, KSDrift, TabularDrift
from alibi_detect.od import IForest, Mahalanobis
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.examples import train_iris
from inferline.runtimes.alibi_detect import save_detector

FEATURES = 3
REFERENCE_ROWS = 500


def settings(folder: Path, name: str, implementation: str, **extra) -> None:
    doc = {"name": name, "implementation": implementation, "parameters": {"extra": extra}}
    (folder / "model-settings.json").write_text(json.dumps(doc, indent=2) + "\n")


def detector_folder(root: Path, name: str, detector, **extra) -> None:
    folder = root / name
    save_detector(detector, folder)
    # MLServer's class path: a folder made for MLServer is served as it is.
    settings(folder, name, "mlserver_alibi_detect.AlibiDetectRuntime", **extra)


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    x_ref = rng.normal(size=(REFERENCE_ROWS, FEATURES)).astype(np.float32)
    categories = rng.integers(0, 3, size=(REFERENCE_ROWS, 2))
    mixed = np.hstack([x_ref[:, :2], rng.integers(0, 3, size=(REFERENCE_ROWS, 1))]).astype(
        np.float32
    )
    detect = out / "detect"
    detector_folder(detect, "ks-drift", KSDrift(x_ref, p_val=0.05))
    detector_folder(detect, "ks-drift-batched", KSDrift(x_ref, p_val=0.05), batch_size=3)
    detector_folder(
        detect,
        "ks-drift-features",
        KSDrift(x_ref, p_val=0.05),
        predict_parameters={"drift_type": "feature"},
    )
    detector_folder(detect, "chi2-drift", ChiSquareDrift(categories, p_val=0.05))
    detector_folder(
        detect,
        "tabular-drift",
        TabularDrift(mixed, p_val=0.05, categories_per_feature={2: None}),
    )
    forest = IForest(n_estimators=100)
    forest.fit(x_ref)
    forest.infer_threshold(x_ref, threshold_perc=99)
    detector_folder(detect, "iforest", forest)
    mahalanobis = Mahalanobis()
    mahalanobis.infer_threshold(x_ref, threshold_perc=99)
    detector_folder(
        detect,
        "mahalanobis",
        mahalanobis,
        predict_parameters={"return_instance_score": True},
    )

    # An anchor explainer of the iris classifier, fitted here and saved with alibi's own
    # `save`; the served explainer calls the real iris model through the router instead of
    # this local copy (which alibi needs at construction to see that it answers labels).
    features, labels = load_iris(return_X_y=True)
    local = LogisticRegression(max_iter=1000).fit(features, labels)
    names = ["sepal length", "sepal width", "petal length", "petal width"]
    explainer = AnchorTabular(local.predict, feature_names=names, seed=1)
    explainer.fit(features, disc_perc=(25, 50, 75))
    explainer.save(out / "explain" / "iris-anchors")

    # For a server of this virtualenv alone: its own iris model (pickled with this numpy), a
    # KernelShap of its probabilities and an AnchorText of a one-word text classifier, each
    # saved with alibi's `save`.
    serve = out / "explain-serve"
    train_iris(serve / "iris")
    shap = KernelShap(local.predict_proba, link="logit", feature_names=names, seed=0)
    shap.fit(features[::10])
    shap.save(serve / "iris-shap")
    anchors = AnchorText(
        predictor=lambda texts: np.array([int("good" in t.split()) for t in texts]),
        sampling_strategy="unknown",
        # A blank English pipeline: tokens are all the "unknown" sampler needs, and it is
        # made here (a trained spaCy model would be a download).
        nlp=spacy.blank("en"),
        seed=0,
    )
    anchors.save(serve / "review-anchors")

    online_detector(out / "online" / "positive-rate")
    stripes_classifier(out / "image" / "stripes")


# A stream of a binary classifier's answers (1 = positive), positive 30% of the time in the
# reference data; the online tests send 90%.
POSITIVE_RATE = 0.3


def online_detector(folder: Path) -> None:
    """FETDriftOnline on one binary feature: the quickest online detector to build without
    TensorFlow or torch (about 1 s; CVMDriftOnline's numba compilation took 26 s cold here).
    ert 10000 with 50000 bootstraps: no false alarm in 20 seeded unshifted streams of 60, and a
    shift to 90% positives flagged within 12 instances. It is built again (thresholds simulated
    again) each time a server loads it: only its settings and reference data are saved."""
    rng = np.random.default_rng(3)
    x_ref = (rng.random((500, 1)) < POSITIVE_RATE).astype(np.float32)
    detector = FETDriftOnline(
        x_ref, ert=10_000, window_sizes=[10], n_bootstraps=50_000, verbose=False
    )
    detector_folder(folder.parent, folder.name, detector, state_save_freq=10)


# The anchor_image classifier's images: 24 x 24 RGB noise; in class 1 the top-left 8 x 8 square
# holds vertical stripes (alternate columns bright and dark), in class 0 a flat grey square of
# the same mean. Averaging that square away, as AnchorImage does to a superpixel it hides,
# erases the stripes: only the superpixels over the square can keep an image in class 1.
IMAGE_SIDE = 24
SQUARE = 8
# slic's grid of about 3 x 3 superpixels. alibi's default compactness (10) lets the pixel noise
# split the image into crumbs that slic's connectivity pass merges back into one segment.
SEGMENTATION = {"n_segments": 9, "compactness": 100, "start_label": 0}


def stripes_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    pixels = rng.uniform(0.2, 0.8, size=(count, IMAGE_SIDE, IMAGE_SIDE, 3))
    stripes = np.where(np.arange(SQUARE) % 2 == 0, 0.9, 0.1)[None, :, None]
    square = np.where(labels[:, None, None, None] == 1, stripes, 0.5)
    pixels[:, :SQUARE, :SQUARE, :] = square + rng.normal(0, 0.05, size=(count, SQUARE, SQUARE, 3))
    return np.clip(pixels, 0, 1).astype(np.float32), labels


def stripes_classifier(folder: Path) -> None:
    import joblib

    pixels, labels = stripes_images(400, seed=0)
    model = LogisticRegression(max_iter=1000).fit(pixels.reshape(len(pixels), -1), labels)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    # Unseen images for the test: one of class 1 to explain, two of class 0 as backgrounds.
    unseen, unseen_labels = stripes_images(20, seed=1)
    np.save(folder.parent / "striped.npy", unseen[unseen_labels == 1][0])
    np.save(folder.parent / "plain.npy", unseen[unseen_labels == 0][:2])

    # The same explainer saved with alibi's `save`, as a Seldon Model's storageUri holds it;
    # the served one calls the served classifier instead of this local copy.
    explainer = AnchorImage(
        lambda x: model.predict(x.reshape(len(x), -1)),
        image_shape=(IMAGE_SIDE, IMAGE_SIDE, 3),
        segmentation_fn="slic",
        segmentation_kwargs=SEGMENTATION,
        seed=0,
    )
    explainer.save(folder.parent / "stripes-anchors")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
