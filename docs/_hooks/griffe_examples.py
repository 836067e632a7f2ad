"""Griffe extension: read a docstring's `Example:` section as griffe's `Examples:` section.

The package's docstrings (Google style) title their doctest-style examples `Example:`; griffe only
recognises `Examples:` and would render the singular as an admonition of plain text, losing the code
formatting of the `>>>` lines. Used by mkdocstrings (`mkdocs.yml`); the source is not changed.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class SingularExamples(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
