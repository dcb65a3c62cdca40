"""Print the table of a ``bench/test_bench_memory.py`` JSON result: peak resident memory of
``edge-had detect`` per detector, in MB and as a multiple of the scene file."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    result = json.load(open(path))
    first = result["benchmarks"][0]["extra_info"]
    shape = " x ".join(str(n) for n in first["shape"])
    print(f"scene: {shape} int16, {first['file_mb']:.0f} MB file")
    print("| detector | peak MB | x file | seconds |")
    print("|---|---|---|---|")
    for bench in result["benchmarks"]:
        info = bench["extra_info"]
        print(
            f"| `{info['detector']}` | {info['peak_mb']:.0f} | {info['peak_over_file']:.1f} "
            f"| {bench['stats']['min']:.1f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
