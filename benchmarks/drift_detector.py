"""What one drift test costs on CIFAR-10-shaped images (not collected by pytest).

    python benchmarks/drift_detector.py [--batch 20] [--repeat 5]

The drift runtime's KS test of the `example://cifar10-drift` model (500 reference images,
32 x 32 x 3 = 3072 features, Bonferroni) on one batch, against scipy's `ks_2samp` called column
by column, which is what the runtime did before it grouped columns by their statistic (and what
alibi-detect's KSDrift does). Prints the median wall and CPU seconds per test of each, and checks
that both give the same p-values. CPU time is the fairer number on a shared machine.
"""

import argparse
import statistics
import time

import numpy as np
from scipy import stats

from inferline.examples import cifar10
from inferline.runtimes.drift import DriftSettings, DriftTest


def per_column(reference: np.ndarray, batch: np.ndarray) -> np.ndarray:
    return np.array(
        [
            stats.ks_2samp(reference[:, f], batch[:, f], method="asymp").pvalue
            for f in range(reference.shape[1])
        ]
    )


def timed(function, repeat: int) -> tuple[float, float, object]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    reference = cifar10.images(cifar10.TRAIN_IMAGES, cifar10.SEED)[0]
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    batch = cifar10.images(args.batch, seed=1)[0].reshape(args.batch, -1).astype(np.float64)
    test = DriftTest(reference, DriftSettings(), stats)

    wall, cpu, (_, grouped) = timed(lambda: test.feature_scores(batch), args.repeat)
    print(f"runtime (grouped by statistic): {wall:.3f} s wall, {cpu:.3f} s CPU per test")
    wall, cpu, column = timed(lambda: per_column(reference, batch), args.repeat)
    print(f"scipy column by column:         {wall:.3f} s wall, {cpu:.3f} s CPU per test")
    np.testing.assert_allclose(grouped, column, rtol=1e-9)
    print(f"same p-values for all {reference.shape[1]} features")


if __name__ == "__main__":
    main()
