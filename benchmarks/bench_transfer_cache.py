"""The transfer family's feature cache, measured side by side in one run on EfficientNet-Lite0 (ImageNet weights).

1. A head-only trial on a fresh cache (cold: the frozen backbone runs over every image once and the features are saved).
2. The same trial again (warm: the features are read from disk and only the head trains).
3. A head-only trial that cannot use the cache (horizontal flip on: the whole network runs every epoch), for scale.
The images' decode cache is warmed first, so all three measure the network, not JPEG decoding.

    nice -n 19 .venv/bin/python benchmarks/bench_transfer_cache.py [--data PATH] [--size 224] [--epochs 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.data import load_arrays, resolve_root, scan
from bench.objective import TrialContext, get_objective
from bench.transfer.efficientnet_lite import imagenet_weights


def trial(params: dict, root: Path, cache: Path) -> tuple[float, object]:
    start = time.perf_counter()
    result = get_objective("transfer").run(params, TrialContext(seed=0, data_root=root, cache_dir=cache))
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data root (default: $BENCH_DATA, ./data/mit8, ../shared/data/mit8)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--skip-uncached", action="store_true", help="leave out the whole-network trial (the slow one)")
    args = ap.parse_args()
    root = resolve_root(args.data)
    params = dict(input_size=args.size, epochs=args.epochs, one_cycle=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        load_arrays(scan(root), args.size, True, cache)  # decode once, outside the timings
        imagenet_weights(cache)  # convert the weights once, outside the timings
        rows = [("cold (features computed)", *trial(params, root, cache)),
                ("warm (features from the cache)", *trial(params, root, cache))]
        if not args.skip_uncached:
            rows.append(("no cache possible (flip on)", *trial(dict(params, flip=True), root, cache)))
    warm = rows[1][1]
    print(f"EfficientNet-Lite0, {args.size} px, head only, {args.epochs} epochs, {root}")
    for name, seconds, result in rows:
        print(f"  {name:34s} {seconds:7.1f} s  = {seconds / warm:6.1f}x warm   val {result.val_accuracy:.3f}  "
              f"test {result.test_accuracy:.3f}")


if __name__ == "__main__":
    main()
