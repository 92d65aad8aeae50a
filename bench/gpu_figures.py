"""Every GPU figure of issue 15 in one run; prints one JSON line per part, then a summary line.

1. ``bench/gate_optimizer.py --skip-cpu``: the fused Triton gate step (forward + backward)
   against the unfused PyTorch ops (target ≥ 2×), and ``nice-opt`` on a ResNet-50 at 224 px
   against T × (forward + backward) of the classifier (target ≥ 0.8).
2. ``bench/deletion_engine.py --device cuda``: the deletion engine against the forward-pass
   limit on the GPU (target ≥ 0.85), small CNN and ResNet-50.
3. The default leaderboard on ``--device cuda``: wall time cold (an empty ``NICEBENCH_CACHE``:
   every classifier, NICE and rtsal trained) and warm (the same cache, a new run directory).

Meant for a machine with a CUDA device and Triton; each part runs in its own process, so one
failing part does not hide the others.

    python bench/gpu_figures.py [--out DIR] [--skip-leaderboard]
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

HERE = Path(__file__).resolve().parent


def _part(name: str, cmd: list[str], env: dict[str, str], log: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = round(time.perf_counter() - t0, 1)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(last[-1]) if last else None
    out = {"part": name, "rc": proc.returncode, "wall_s": wall, "result": result}
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-1500:]
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=tempfile.mkdtemp(prefix="nicebench-gpu-"))
    p.add_argument("--skip-leaderboard", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ)
    parts = [
        _part(
            "gate_optimizer",
            [py, str(HERE / "gate_optimizer.py"), "--skip-cpu"],
            env,
            out / "gate_optimizer.log",
        ),
        _part(
            "deletion_engine",
            [py, str(HERE / "deletion_engine.py"), "--device", "cuda"],
            env,
            out / "deletion_engine.log",
        ),
    ]
    if not args.skip_leaderboard:
        cache = tempfile.mkdtemp(prefix="nicebench-cache-")
        lb_env = {**env, "NICEBENCH_CACHE": cache}
        for phase in ("cold", "warm"):
            cmd = [
                py,
                "-m",
                "nicebench.cli",
                "run",
                "--device",
                "cuda",
                "--out",
                str(out / f"leaderboard-{phase}"),
            ]
            parts.append(
                _part(f"leaderboard_{phase}", cmd, lb_env, out / f"leaderboard-{phase}.log")
            )
    print(
        json.dumps(
            {
                "bench": "gpu_figures",
                "parts": {q["part"]: q["wall_s"] for q in parts},
                "failed": [q["part"] for q in parts if q["rc"]],
            }
        )
    )


if __name__ == "__main__":
    main()
