"""An example nicebench plugin package.

Each plugin kind has its own module, named by an entry point in ``pyproject.toml``:
:mod:`nicebench_example.methods` (``grad-x-input``), :mod:`nicebench_example.datasets`
(``bars``) and :mod:`nicebench_example.codecs` (``jpeg2000``). A new kind goes the same way: a
module beside these and an entry-point group.
"""

__version__ = "0.1.0"
