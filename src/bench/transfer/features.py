"""The feature cache of a frozen network part: its output for every image is computed once and kept on disk.

Keyed by everything that changes those outputs: the data's fingerprint, the backbone, its weights, the input size,
the activation swap, the cut point and the layer the frozen part ends at. A trial that only changes what comes after
(the head, the optimizer, the unfrozen blocks) then trains on the stored outputs in seconds.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np


def feature_key(**identity) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract(model, x: np.ndarray, label: str, batch_size: int = 64) -> np.ndarray:
    """model's outputs for x in batches, as float16; tells how long it will take after the first batch."""
    out = []
    for i in range(0, len(x), batch_size):
        start = time.perf_counter()
        out.append(np.asarray(model(x[i : i + batch_size], training=False), dtype=np.float16))
        if i == batch_size:  # the first batch also builds the graph: time the second
            per_image = (time.perf_counter() - start) / batch_size
            print(f"bench: computing {label} for {len(x)} images once, about {per_image * len(x):.0f} s "
                  f"(later trials read them from the cache)", file=sys.stderr, flush=True)
    return np.concatenate(out) if out else np.zeros((0,), np.float16)


def cached_features(model, arrays_x: dict[str, np.ndarray], folder: Path, label: str) -> tuple[dict[str, np.ndarray], bool]:
    """{name: features} for each array of images, from folder if there, else computed and saved. Returns (features, hit)."""
    paths = {name: folder / f"{name}.npy" for name in arrays_x}
    if all(p.exists() for p in paths.values()):
        return {name: np.load(p) for name, p in paths.items()}, True
    folder.mkdir(parents=True, exist_ok=True)
    features = {}
    for name, x in arrays_x.items():
        features[name] = extract(model, x, f"{label} ({name})")
        tmp = folder / f"{name}.tmp.npy"  # write then rename: a killed run never leaves half a cache
        np.save(tmp, features[name])
        tmp.replace(paths[name])
    return features, False
