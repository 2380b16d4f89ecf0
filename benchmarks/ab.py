"""Two pkgnet builds against each other on one model: alternated `pkgnet bench` rounds.

    python3 benchmarks/ab.py OLD/pkgnet NEW/pkgnet --model M.safetensors [--batches 1 17 68 128]
                             [--rounds 12] [--threads 2] [--seconds 0.6]

For a change to the engine: build the old commit in a worktree
(`git worktree add /tmp/old <commit> && make -C /tmp/old build`), then compare
its `.build/release/pkgnet` with this tree's. Each round runs both builds (in
turns, the old one first on even rounds), so a shared machine's load moves
both; the figure to read is the median of the per-round ratios new/old, with
their range. Rates are medians too.
"""

import argparse
import re
import statistics
import subprocess


def bench(binary, model, threads, batches, seconds):
    """cubes/s per batch size from one `pkgnet bench` run."""
    out = subprocess.run(
        [binary, "bench", "--model", model, "--threads", str(threads), "--batches", *map(str, batches),
         "--seconds", str(seconds)],
        capture_output=True, text=True, check=True).stdout
    rates = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"batch\s+(\d+)\s+([\d.]+) cubes/s", out)}
    missing = [b for b in batches if b not in rates]
    if missing:
        raise SystemExit(f"{binary} bench printed no rate for batch {missing}:\n{out}")
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the baseline pkgnet CLI")
    parser.add_argument("new", help="the pkgnet CLI under test")
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 17, 68, 128])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0.6, help="timing per run of each build")
    args = parser.parse_args()

    old_rates, new_rates = {b: [] for b in args.batches}, {b: [] for b in args.batches}
    for r in range(args.rounds):
        order = [(args.old, old_rates), (args.new, new_rates)]
        for binary, rates in order if r % 2 == 0 else order[::-1]:
            for b, rate in bench(binary, args.model, args.threads, args.batches, args.seconds).items():
                rates[b].append(rate)
    print(f"{args.rounds} rounds, {args.threads} threads, cubes/s (medians) and new/old per round")
    for b in args.batches:
        ratios = [n / o for o, n in zip(old_rates[b], new_rates[b])]
        print(f"  batch {b:4d}: old {statistics.median(old_rates[b]):8.1f}  new {statistics.median(new_rates[b]):8.1f}"
              f"  new/old {statistics.median(ratios):.3f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
