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
from typing import Any, Callable

import numpy as np

from bench.data import write_atomically


def feature_key(**identity) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract(model, x: np.ndarray, label: str, batch_size: int = 64, every_s: float = 15.0) -> np.ndarray:
    """model's outputs for x in batches, as float16. Tells the time it will take after the second batch (the first also
    builds the graph), then every `every_s` seconds the time left from the running average, which falls as the
    batches warm up, and at the end the time it took."""
    out, started, said = [], time.perf_counter(), None
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(model(x[i : i + batch_size], training=False), dtype=np.float16))
        done, now = i + len(out[-1]), time.perf_counter()
        if i == 0:
            first_done = now
        elif done < len(x) and (said is None or now - said >= every_s):
            left = (now - first_done) / (done - batch_size) * (len(x) - done)
            head = (f"computing {label} for {len(x)} images once (later trials read them from the cache)"
                    if said is None else f"{label}: {done}/{len(x)} images")
            print(f"bench: {head}, about {left:.0f} s left", file=sys.stderr, flush=True)
            said = now
    if said is not None:
        print(f"bench: {label}: {len(x)} images in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return np.concatenate(out) if out else np.zeros((0,), np.float16)


def cached_features(make_model: Callable[[], Any], arrays_x: dict[str, np.ndarray], folder: Path,
                    label: str) -> tuple[dict[str, np.ndarray], bool]:
    """{name: features} for each array of images, from folder if there, else computed by the network make_model()
    builds (only on a miss) and saved. Returns (features, hit)."""
    paths = {name: folder / f"{name}.npy" for name in arrays_x}
    if all(p.exists() for p in paths.values()):
        return {name: np.load(p) for name, p in paths.items()}, True
    features, model = {}, make_model()
    for name, x in arrays_x.items():
        features[name] = extract(model, x, f"{label} ({name})")
        write_atomically(paths[name], lambda tmp: np.save(tmp, features[name]))
    return features, False
