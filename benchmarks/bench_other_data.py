"""The default search on a second real image set, against a scikit-learn classifier on the raw pixels of the same split.

    python benchmarks/bench_other_data.py [--trials 20] [--folder /tmp/bench-digits] [--results DIR]

The set: scikit-learn's handwritten digits (load_digits: 1,797 real 8x8 scans, 10 classes), which ship inside the
scikit-learn package, written out as one ROOT/<class>/*.png folder that bench splits itself (stratified, seeded, 30 %
test). Horizontal flips turn a 2 into something else, so the search runs with `--fix flip=false`. The baselines
(logistic regression and an RBF SVM on the 64 raw pixels) train on bench's own train split and score on its test split.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench import data as bdata
from bench.leaderboard import Leaderboard, db_url


def write_digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), "L").save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "bench-digits")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    if not args.folder.exists():
        write_digits(args.folder)
    results = args.results or Path(tempfile.mkdtemp(prefix="bench-digits-results-"))

    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    catalog = bdata.scan(args.folder, test_fraction=0.3, seed=0)  # the split bench's search uses
    pixels = lambda files: np.stack([np.asarray(Image.open(p), dtype=np.float32).ravel() / 255 for p in files.paths])
    x_train, x_test = pixels(catalog.train), pixels(catalog.test)
    for name, model in (("logistic regression", LogisticRegression(max_iter=2000)), ("RBF SVM", SVC())):
        accuracy = model.fit(x_train, catalog.train.labels).score(x_test, catalog.test.labels)
        print(f"{name:20s} on raw pixels: test accuracy {accuracy:.3f}", flush=True)

    cmd = [sys.executable, "-m", "bench.cli", "search", "tinynet", "--trials", str(args.trials), "--data", str(args.folder),
           "--fix", "flip=false", "--study", "digits", "--results", str(results)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = [r for r in Leaderboard(db_url(None, results)).query(study="digits") if r["status"] == "complete"]
    best = max(rows, key=lambda r: r["val_accuracy"])
    print(f"bench search tinynet --trials {args.trials} --fix flip=false: best val {best['val_accuracy']:.3f}, its test "
          f"{best['test_accuracy']:.3f}, {best['n_params']:,} params (trial {best['trial_number']})")


if __name__ == "__main__":
    main()
