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
from alibi.explainers import AnchorTabular, AnchorText, KernelShap
from alibi_detect.cd import ChiSquareDrift, KSDrift, TabularDrift
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
