"""What running each trial in a child process costs (issue target: under 0.5 s a trial), side by side in one run.

    python benchmarks/bench_trial_process.py [--trials 200]

A no-op family (written to a temporary file and registered as a plugin, as `--objective-file` does) is called
directly N times, then through bench.backends.processes.TrialProcess, which keras-tuner and a limited Ray trial use:
it prints the child's start plus its first trial, the cost of each later trial, and their ratio to a direct call.
A Keras family's child also imports TensorFlow once per start (a few seconds), paid once every --recycle trials.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import textwrap
import time
from pathlib import Path

FAMILY = textwrap.dedent('''
    from bench.objective import Objective, Result

    class Noop(Objective):
        name = "noop"
        defaults = {"x": 0.5}

        def run(self, params, ctx):
            x = self.resolve(params)["x"]
            return Result(x, 0.1, x, x, x, 0.1, x, x, n_params=10, fit_seconds=0.0, epochs=1)
''')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    n = parser.parse_args().trials
    with tempfile.TemporaryDirectory() as tmp:
        family = Path(tmp) / "noop.py"
        family.write_text(FAMILY)
        os.environ["BENCH_OBJECTIVE_FILES"] = json.dumps({"noop": f"{family}:Noop"})  # the child finds it too
        from bench.backends.processes import TrialProcess
        from bench.objective import get_objective
        from bench.trial import TrialContext

        objective = get_objective("noop")
        started = time.perf_counter()
        for i in range(n):
            objective.run({"x": 0.5}, TrialContext(seed=i))
        direct = (time.perf_counter() - started) / n
        child = TrialProcess(recycle=n + 1)
        try:
            started = time.perf_counter()
            child.run("noop", {"x": 0.5}, TrialContext(seed=0))
            first = time.perf_counter() - started
            started = time.perf_counter()
            for i in range(n):
                child.run("noop", {"x": 0.5}, TrialContext(seed=i))
            each = (time.perf_counter() - started) / n
        finally:
            child.close()
    print(f"direct call: {direct * 1e3:.3f} ms a trial ({n} trials)")
    print(f"child process: {first:.2f} s to start it and run its first trial, then {each * 1e3:.1f} ms a trial "
          f"({n} trials); {each / max(direct, 1e-9):.0f}x a direct call; target under 500 ms: "
          f"{'met' if max(first, each) < 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
