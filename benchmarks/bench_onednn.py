"""TensorFlow's oneDNN CPU kernels on against off, on real TinyNet trials, side by side in one run.

    python benchmarks/bench_onednn.py [--data ROOT] [--configs 4] [--looks 3] [--repeats 3]

The space's start points and --configs configurations drawn at random from it (seeded) are trained for --looks
epochs through the objective bench runs, in one fresh process per setting and repeat (TF_ENABLE_ONEDNN_OPTS is read
when TensorFlow is imported), the two settings alternating so that drift in machine load hits both. Per
configuration it prints the median seconds to the first look (build, tracing and the first epoch), the median steady
epoch, and the ratio off / on of each. bench leaves oneDNN on; TF_ENABLE_ONEDNN_OPTS=0 turns it off.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# one process, one setting: the seconds of each configuration's first look and its steady epochs
CHILD = """
import json, statistics, sys
sys.path.insert(0, {here!r})
from bench_first_rung import looks
from bench.objective import get_objective
from bench.space import load_space
objective = get_objective(load_space({space!r}).objective)
rows = []
for params in json.loads({configs!r}):
    seconds = [point["seconds"] for point in looks(objective, params, {looks}, {data!r})]
    steady = [b - a for a, b in zip(seconds, seconds[1:])]  # none if it failed, or the cost cap skipped it
    rows.append([seconds[0], statistics.median(steady)] if steady else None)
print("ROWS", json.dumps(rows))
"""


def main() -> None:
    sys.path.insert(0, str(HERE))
    from bench_first_rung import config_parser, sample_configs

    from bench.space import load_space

    parser = config_parser(__doc__, configs=4, n_looks=3, seed=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    space = load_space(args.space)
    configs = [{**space.fixed(), **point} for point in space.start]
    configs += [{**space.fixed(), **params} for params in sample_configs(space, args.configs, args.seed)]
    code = CHILD.format(here=str(HERE), space=args.space, configs=json.dumps(configs), looks=max(2, args.looks),
                        data=args.data)
    runs: dict[str, list] = {"0": [], "1": []}
    for _ in range(args.repeats):
        for setting in ("1", "0"):
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            line = next((l for l in out.stdout.splitlines() if l.startswith("ROWS ")), None)
            if line is None:  # a crash is a finding: say so and go on with the other runs
                print(f"oneDNN {'on' if setting == '1' else 'off'}: the process ended with code {out.returncode}")
                continue
            runs[setting].append(json.loads(line[5:]))

    def median(setting: str, i: int, k: int) -> float | None:
        values = [run[i][k] for run in runs[setting] if run[i] is not None]
        return statistics.median(values) if values else None

    print(f"{'configuration':<44} {'first look on / off':>20} {'ratio':>6} {'steady epoch on / off':>22} {'ratio':>6}")
    for i, params in enumerate(configs):
        label = (f"{'start ' + str(i) if i < len(space.start) else 'random'}: {params['input_size']} px, "
                 f"{params['blocks']} blocks{', separable' if params.get('separable') else ''}"
                 f"{', residual' if params.get('residual') else ''}")
        cells = []
        for k in (0, 1):
            on, off = median("1", i, k), median("0", i, k)
            if on is None or off is None:
                cells += ["(no epochs)", ""]  # it failed, or the cost cap skipped it
            else:
                cells += [f"{on:.2f} / {off:.2f} s", f"{off / on:.2f}x"]
        print(f"{label:<44} {cells[0]:>20} {cells[1]:>6} {cells[2]:>22} {cells[3]:>6}")


if __name__ == "__main__":
    main()
