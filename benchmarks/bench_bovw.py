"""BoVW caching, measured side by side in one run.

1. One trial on a fresh cache (cold: extracts the descriptors, fits the codebooks), then the same trial again (warm:
   everything loaded from the cache).
2. A sweep over 6 codebook sizes k on the same fixed dense SIFT, from another fresh cache: the first trial extracts,
   the other five only load the descriptors. It should cost at most 2x one cold trial.

    nice -n 19 .venv/bin/python benchmarks/bench_bovw.py [--data PATH] [--ks 32,64,...] [--image-size 256]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.bovw import descriptors
from bench.data import resolve_root
from bench.objective import TrialContext, get_objective


def trial(params: dict, root: Path, cache: Path) -> tuple[float, object]:
    descriptors.clear_memo()  # a new process would start with an empty memo: measure the disk cache, not memory
    start = time.perf_counter()
    result = get_objective("bovw").run(params, TrialContext(seed=0, data_root=root, cache_dir=cache))
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data root (default: $BENCH_DATA, ./data/mit8, ../shared/data/mit8)")
    ap.add_argument("--ks", default="32,64,96,128,192,256", help="the 6 codebook sizes of the sweep")
    ap.add_argument("--k", type=int, default=128, help="codebook size of the single cold / warm trial")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--step", type=int, default=8)
    ap.add_argument("--patch-sizes", default="16")
    ap.add_argument("--cv-folds", type=int, default=8)
    args = ap.parse_args()
    root = resolve_root(args.data)
    base = dict(descriptor="sift", keypoints="dense", step=args.step, patch_sizes=args.patch_sizes,
                image_size=args.image_size, color="gray", encoding="hist", levels=0, normalize="l1",
                classifier="svm", svm_kernel="linear", C=10.0, cv_folds=args.cv_folds)
    ks = [int(k) for k in args.ks.split(",")]
    print(f"data {root} | dense SIFT step {args.step}, patch sizes {args.patch_sizes}, {args.image_size}px gray | "
          f"histogram, linear SVM, {args.cv_folds}-fold CV + refit + test")
    with tempfile.TemporaryDirectory(prefix="bench_bovw_") as tmp:
        cold_s, r = trial({**base, "k": args.k}, root, Path(tmp) / "single")
        print(f"single trial k={args.k} cold: {cold_s:7.1f} s  (descriptor extraction {r.extras['history']['extract_seconds'][0]:.1f} s) "
              f"| CV acc {r.val_accuracy:.3f}, test acc {r.test_accuracy:.3f}, params {r.extras['history']['n_params_fitted'][0]:,.0f}")
        warm_s, r = trial({**base, "k": args.k}, root, Path(tmp) / "single")
        print(f"single trial k={args.k} warm: {warm_s:7.1f} s  (cold / warm = {cold_s / warm_s:.1f}x)")
        sweep = 0.0
        for k in ks:
            s, r = trial({**base, "k": k}, root, Path(tmp) / "sweep")
            sweep += s
            hit = "cached descriptors" if r.extras["history"]["descriptor_cache_hit"][0] else "extracted"
            print(f"  sweep k={k:5d}: {s:7.1f} s ({hit}) | CV acc {r.val_accuracy:.3f}, test acc {r.test_accuracy:.3f}")
    ratio = sweep / cold_s
    print(f"sweep of {len(ks)} k values from a cold cache: {sweep:.1f} s = {ratio:.2f}x one cold trial "
          f"({'within' if ratio <= 2 else 'OVER'} the 2x target)")


if __name__ == "__main__":
    main()
