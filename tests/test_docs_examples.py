"""Every fenced code block of README.md and docs/**/*.md runs here, so an example cannot rot.

One test per block, named ``file:line``. The info string says what a block is:

* ``python``: run top to bottom, the page's blocks in one namespace, in order;
* ``bash``: run as one script, command line by command line in order (``pipefail``); the first
  line that fails, ``a && b`` included, stops the block and is named;
* ``toml``: parsed (``file="name.toml"`` also writes it for the page's later blocks);
* ``text``: output shown to the reader, not run;
* ``python skip="why"`` / ``bash skip="why"``: not run, the reason shown as the skip's.

Each page's blocks run in a temporary directory of the page's own, with ``$NICEBENCH_CACHE`` the
test session's cache and this interpreter's ``bin`` first on ``PATH`` (``nicebench``, ``python``).
Any other info string (or none) fails its block. The generated pages (metric catalogue, CLI
reference, speed) are not on disk: ``docsgen/hooks.py`` writes them at build time.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
RUN = {"python", "bash"}
KNOWN = RUN | {"toml", "text"}
OPTIONS = {"skip", "file"}
BLOCK_TIMEOUT_S = 600
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its options and its code."""

    path: str
    line: int  # 1-based line of the opening fence
    lang: str
    options: dict[str, str]
    code: str
    code_line: int  # 1-based line of the code's first line
    error: str = ""  # why the info string is refused ("" when it is fine)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def parse_blocks(text: str, path: str) -> list[Block]:
    """The fenced blocks of a Markdown ``text`` (indented fences too, e.g. inside a list)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        end = i + 1
        while end < len(lines) and not re.fullmatch(
            rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", lines[end]
        ):
            end += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
        lang, options, error = _parse_info(info)
        blocks.append(Block(path, i + 1, lang, options, "\n".join(body) + "\n", i + 2, error))
        i = end + 1
    return blocks


def _parse_info(info: str) -> tuple[str, dict[str, str], str]:
    try:
        words = shlex.split(info)
    except ValueError as exc:
        return info, {}, f"info string {info!r} does not parse: {exc}"
    if not words:
        return "", {}, f"a fence needs a language: one of {sorted(KNOWN)}"
    lang, options = words[0], {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or key not in OPTIONS:
            return lang, options, f'unknown option {word!r} (known: {sorted(OPTIONS)}, key="value")'
        options[key] = value
    if lang not in KNOWN:
        return lang, options, f"unknown language {lang!r}: use one of {sorted(KNOWN)}"
    if "skip" in options and (lang not in RUN or not options["skip"].strip()):
        return lang, options, 'skip="reason" is for python and bash blocks, with a reason'
    if "file" in options and lang != "toml":
        return lang, options, 'file="name" is for toml blocks'
    return lang, options, ""


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.exists()]


def all_blocks(root: Path = REPO) -> list[Block]:
    out = []
    for path in doc_files(root):
        out += parse_blocks(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
    return out


@dataclass
class PageState:
    """What a page's blocks share: a directory, a Python namespace, and whether one failed."""

    cwd: Path
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    failed: str = ""
    plugins: dict | None = None  # the registries before the page's first Python block


def _registries() -> dict:
    from nicebench.registry import CODECS, DATASETS, METHODS, METRICS, MODELS

    return {
        r: {name: r.get(name) for name in r.names()}
        for r in (METHODS, DATASETS, METRICS, CODECS, MODELS)
    }


def restore_plugins(state: PageState) -> None:
    """Undo what the page's Python blocks registered, so that no other test sees it."""
    for registry, before in (state.plugins or {}).items():
        for name in set(registry.names()) - set(before):
            registry.unregister(name)
        for name, obj in before.items():
            if registry.get(name) is not obj:
                registry.register(name, obj, overwrite=True)
    state.plugins = None


def run_block(block: Block, state: PageState) -> None:
    """Run ``block`` in the page's ``state``; raise AssertionError naming the block on failure."""
    if block.lang == "toml":
        parsed = tomllib.loads(block.code)  # a TOMLDecodeError names the line
        if "file" in block.options:
            target = state.cwd / block.options["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        assert isinstance(parsed, dict)
    elif block.lang == "python":
        where = REPO / block.path  # a traceback then shows the Markdown line
        filename = str(where) if where.exists() else block.path
        code = compile("\n" * (block.code_line - 1) + block.code, filename, "exec")
        old = Path.cwd()
        os.chdir(state.cwd)
        try:
            exec(code, state.namespace)
        finally:
            os.chdir(old)
    elif block.lang == "bash":
        _run_bash(block, state.cwd)


def bash_script(block: Block) -> str:
    """The block as a ``bash -e`` script in which every command line (a line, or lines joined by
    ``\\``, a heredoc or an open quote) stops the block when it fails, naming its Markdown line;
    ``set -e`` alone lets the first command of ``a && b`` fail unnoticed."""
    out, chunk, first = [], [], 0
    for n, line in enumerate(block.code.splitlines()):
        if not chunk:
            first = n
        chunk.append(line)
        text = "\n".join(chunk)
        check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        if line.endswith("\\") or check.returncode or check.stderr:
            continue
        chunk = []
        if not text.strip() or text.strip().startswith("#") and "\n" not in text.strip():
            out.append(text)
            continue
        where = f"{block.path}:{block.code_line + first}"
        out.append(
            f"{text}\n__status=$?; if [ $__status -ne 0 ]; then echo {shlex.quote(where)}: "
            f"exit $__status: {shlex.quote(text.splitlines()[0])} >&2; exit $__status; fi"
        )
    return "set +e -o pipefail\n" + "\n".join(out + chunk) + "\n"


def _run_bash(block: Block, cwd: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-c", bash_script(block)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    if proc.returncode:
        raise AssertionError(
            f"{block.id}: bash block exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )


BLOCKS = [b for b in all_blocks() if b.lang != "text" or b.error]
_PAGES: dict[str, PageState] = {}
_LAST_PYTHON = {b.path: b.id for b in BLOCKS if b.lang == "python" and not b.options}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, tmp_path_factory):
    """The block runs as written (or is a skip with its reason, or fails on its info string)."""
    if block.error:
        pytest.fail(f"{block.id}: {block.error}", pytrace=False)
    if "skip" in block.options:
        pytest.skip(f"{block.id}: {block.options['skip']}")
    state = _PAGES.get(block.path)
    if state is None:
        cwd = tmp_path_factory.mktemp(re.sub(r"\W", "_", block.path))
        state = _PAGES[block.path] = PageState(cwd)
    if state.failed:
        pytest.skip(f"an earlier block of {block.path} failed ({state.failed})")
    if block.lang == "python" and state.plugins is None:
        state.plugins = _registries()
    try:
        run_block(block, state)
    except BaseException:
        state.failed = block.id
        raise
    finally:
        if state.failed or block.id == _LAST_PYTHON.get(block.path):
            restore_plugins(state)


# -- the harness itself ----------------------------------------------------------------------------
PAGE = """# A page
```python
x = 2
```
Some text.

1. In a list:

    ```python
    assert x == 2
    y = x + 1
    ```

```bash skip="needs a GPU"
nicebench run --device cuda
```
```text
output, not run
```
```toml file="conf/a.toml"
n_images = 4
```
```bash
test -f conf/a.toml
echo ok > out.txt
false
echo never
```
```console
$ ls
```
```python extra="1"
pass
```
"""


def test_parser_finds_every_block_with_lines_and_options():
    blocks = parse_blocks(PAGE, "page.md")
    got = [(b.line, b.lang, b.options, b.error != "") for b in blocks]
    assert got == [
        (2, "python", {}, False),
        (9, "python", {}, False),
        (14, "bash", {"skip": "needs a GPU"}, False),
        (17, "text", {}, False),
        (20, "toml", {"file": "conf/a.toml"}, False),
        (23, "bash", {}, False),
        (29, "console", {}, True),
        (32, "python", {}, True),
    ]
    assert blocks[1].code == "assert x == 2\ny = x + 1\n"  # the list's indentation removed
    assert "unknown language 'console'" in blocks[6].error
    assert blocks[7].error.startswith("unknown option 'extra=1'")


def test_blocks_share_the_page_and_a_failing_bash_line_is_named(tmp_path):
    blocks = parse_blocks(PAGE, "page.md")
    state = PageState(tmp_path)
    for block in blocks[:2] + blocks[4:5]:
        run_block(block, state)
    assert state.namespace["y"] == 3 and (tmp_path / "conf" / "a.toml").exists()
    with pytest.raises(AssertionError, match=r"page\.md:26: exit 1: false") as err:
        run_block(blocks[5], state)
    assert "never" not in str(err.value) and (tmp_path / "out.txt").read_text() == "ok\n"
    with pytest.raises(AssertionError):  # a failing Python block raises, naming its page line
        run_block(Block("page.md", 40, "python", {}, "assert False\n", 41), state)


def test_a_failing_first_command_of_a_list_fails_the_block(tmp_path):
    code = "false && echo no\ncat <<EOF > a.txt\nx\nEOF\necho \\\n  yes\n"
    block = Block("page.md", 1, "bash", {}, code, 2)
    with pytest.raises(AssertionError, match=r"page\.md:2: exit 1: false && echo no"):
        run_block(block, PageState(tmp_path))
    ok = Block("page.md", 1, "bash", {}, code.split("\n", 1)[1], 2)
    run_block(ok, PageState(tmp_path))
    assert (tmp_path / "a.txt").read_text() == "x\n"


def test_a_python_failure_names_the_markdown_line(tmp_path):
    block = Block("page.md", 7, "python", {}, "a = 1\nraise ValueError('boom')\n", 8)
    with pytest.raises(ValueError) as err:
        run_block(block, PageState(tmp_path))
    frame = traceback.extract_tb(err.value.__traceback__)[-1]
    assert (frame.filename, frame.lineno) == ("page.md", 9)


def test_every_document_is_found():
    names = {p.relative_to(REPO).as_posix() for p in doc_files()}
    assert "README.md" in names and "docs/index.md" in names
