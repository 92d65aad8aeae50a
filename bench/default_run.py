"""The default leaderboard's wall time, cold and warm.

Cold: ``nicebench run`` into a new run directory with an empty model cache (``$NICEBENCH_CACHE``
a new temporary folder), so every model comes from the package's shipped weights or is trained;
warm: the same command again into the same run directory (every cell stored). Both in fresh
processes of this interpreter, with the machine's Fashion-MNIST when installed. Prints one JSON
line (``cold_s``, ``warm_s``, ``from_package``: the models the cold run's log says came from the
package, ``trained``: the model files the cold run wrote into the empty cache less those).

    python bench/default_run.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(out: Path, cache: Path, threads: int) -> tuple[float, str]:
    env = {**os.environ, "NICEBENCH_CACHE": str(cache)}
    cli = Path(sys.executable).with_name("nicebench")  # the console script of this environment
    cmd = [str(cli), "run", "--out", str(out), "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"nicebench run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "run", Path(tmp) / "cache"
        cache.mkdir()
        cold, log = _run(out, cache, args.threads)
        cached = sorted(str(f.relative_to(cache)) for f in cache.rglob("*.pt"))
        warm, _ = _run(out, cache, args.threads)
    lines = log.splitlines()
    from_package = sum("from the package" in line for line in lines)
    print(
        json.dumps(
            {
                "bench": "default_run",
                "threads": args.threads,
                "cold_s": round(cold, 1),
                "warm_s": round(warm, 1),
                "from_package": from_package,
                # a shipped module is copied into the cache when loaded: the rest were trained
                "trained": len(cached) - from_package,
                "cache_files": cached,
            }
        )
    )


if __name__ == "__main__":
    main()
