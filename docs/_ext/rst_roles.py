"""A Griffe extension for the docs site: esdsnn's docstrings use reST roles (``:func:`name```,
``:class:`~module.Name```) and ``::`` before code, which Markdown would show literally. Each role
becomes a code span of the name (the last part after ``~``, as Sphinx shows it), and ``::`` a colon,
so the API pages read as the docstrings do in the source."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")
LITERAL_MARKER = re.compile(r"(\S)::$", re.MULTILINE)


def _name(match: re.Match) -> str:
    tilde, target = match.groups()
    target = target.lstrip(".")
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def markdown_of(text: str) -> str:
    return LITERAL_MARKER.sub(r"\1:", ROLE.sub(_name, text))


class RstRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
