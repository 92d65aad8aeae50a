"""No path of a developer's machine in the repository: a clone must not name someone's scratch
folder or home directory (system paths such as ``/usr/share/datasets/...`` are fine)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A home or scratch folder (work, tmp, root, home, Users, scratch) as the first folder of a path (not
# inside another word or path, e.g. base64 in an embedded image or ${TMPDIR:-/tmp}).
MACHINE_PATH = re.compile(r"(?<![\w.~:/${}+-])/(?:work|tmp|root|home|Users|scratch)/")
# (file, text on the line) where such a path is legitimate; empty today.
ALLOWED: set[tuple[str, str]] = set()


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line of ``text`` that names a machine path."""
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files to read")
    paths = [REPO / p for p in out.decode().split("\0") if p]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def test_no_tracked_file_names_a_machine_path():
    found = []
    for path in tracked_text_files():
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [
            f"{rel}:{n}: {line[:120]}"
            for n, line in machine_paths(text)
            if not any(rel == f and allowed in line for f, allowed in ALLOWED)
        ]
    assert not found, (
        "paths of a developer's machine (write a relative path, $VAR or mktemp):\n"
        + "\n".join(found)
    )


def test_the_pattern_finds_machine_paths_and_spares_system_ones():
    home, scratch = "/" + "home/ana/x", "/" + "tmp/run1"
    text = f"ok /usr/share/datasets/fashion-mnist\ncache={scratch}\n`{home}`\n${{TMPDIR:-/tmp}}/x\nZD/tmpc9b"
    assert [n for n, _ in machine_paths(text)] == [2, 3]
