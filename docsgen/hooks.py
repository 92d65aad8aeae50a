"""MkDocs hooks (``hooks:`` in ``mkdocs.yml``): the generated pages, written from the code and the
committed results at every build so that they cannot drift from either.

* ``reference/metrics.md``: the metric catalogue (:mod:`metric_catalogue`);
* ``reference/cli.md``: the command line (:mod:`cli_reference`);
* ``speed.md``: the benchmark figures of ``results/bench.json`` (:mod:`speed`).

``reference/api.md`` is a committed page of mkdocstrings directives; its Sphinx roles
(``:class:`X```) are rendered as code here.
"""

from __future__ import annotations

import re

from cli_reference import cli_page
from metric_catalogue import catalogue_page
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from speed import speed_page

GENERATED = {
    "reference/metrics.md": catalogue_page,
    "reference/cli.md": cli_page,
    "speed.md": speed_page,
}
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_files(files: Files, config) -> Files:
    """Add the generated pages; a committed file of the same name would shadow one, so refuse."""
    for uri, render in GENERATED.items():
        if files.get_file_from_path(uri) is not None:
            raise PluginError(
                f"docs/{uri} is generated at build time by docsgen/hooks.py: delete the file"
            )
        files.append(File.generated(config, uri, content=render()))
    return files


def on_page_content(html: str, page, config, files) -> str:
    """Drop the Sphinx role markers (``:class:`` before inline code) the docstrings use."""
    return _ROLE.sub("", html)
