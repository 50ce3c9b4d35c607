"""Wall time and peak memory of a command's whole process tree (a search and all its worker processes).

    python benchmarks/tree_memory.py [--every 1.0] -- bench search tinynet --trials 200

/usr/bin/time -v reports the largest single process; a search runs its trials in worker processes, so this samples
every process of the tree each --every seconds and prints the peak of their summed RSS, and of their summed PSS
(proportional set size: pages shared between processes, such as TensorFlow's libraries, are split between them, so
the sum is the memory the tree really holds). The command's own output passes through.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    root = psutil.Process(proc.pid)
    peak_rss = peak_pss = peak_procs = 0
    while proc.poll() is None:
        rss = pss = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            rss, pss = rss + info.rss, pss + info.pss
        peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, len(tree))
        time.sleep(args.every)
    wall = time.perf_counter() - start
    print(f"wall {wall:.0f} s | exit {proc.returncode} | peak summed RSS {peak_rss / 2**30:.2f} GiB, "
          f"peak summed PSS {peak_pss / 2**30:.2f} GiB, up to {peak_procs} processes", file=sys.stderr)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
