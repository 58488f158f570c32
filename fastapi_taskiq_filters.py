"""Jinja filters that write a free-text answer safely into each kind of generated file.

Cookiecutter loads ``FiltersExtension`` through ``_extensions`` in ``cookiecutter.json``: it puts
the template folder on ``sys.path`` while it renders (so does ``cruft``), which makes this module
importable. The module name is specific to this template, so that no other template's module of
the same name is taken from Python's import cache. Only the standard library is used: a render
needs no network and nothing installed besides cookiecutter.

- ``toml_escape``: the inside of a TOML basic string (``pyproject.toml`` writes the quotes, so
  the unrendered file stays valid TOML for the tools that read it).
- ``markdown_text``: text that Markdown shows literally, in a heading or a paragraph.
- ``project_folder``: the name of the folder cookiecutter creates before the answers are
  validated; any slug that is not a safe single path component becomes a placeholder, so that a
  refused answer such as ``a/b`` or ``..`` never touches a folder the user named.
"""

from __future__ import annotations

import re

from jinja2 import Environment
from jinja2.ext import Extension

# The folder cookiecutter creates, and deletes again, when the slug is refused.
INVALID_SLUG_FOLDER = "invalid-project-slug"
# Every slug the pre-generation hook accepts matches this (the hook also checks keywords, length
# and dependency names, which need no special folder).
SAFE_FOLDER = re.compile(r"[a-z][a-z0-9_-]{0,79}")

# Characters with an inline meaning in Markdown (CommonMark and GitHub's extensions: emphasis,
# code, links, HTML and entities, headings' closing hashes, tables, strikethrough, math).
MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>&#|~$])")
# At the start of a paragraph, these would begin a list, a quote, a rule or a setext heading.
MARKDOWN_BLOCK_START = re.compile(r"^(\d{1,9})([.)])|^([-+=])")

TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_escape(value: object) -> str:
    """Return ``value`` escaped for the inside of a TOML basic string (``"..."``)."""

    def escape(char: str) -> str:
        if char in TOML_ESCAPES:
            return TOML_ESCAPES[char]
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"\\u{ord(char):04X}"
        return char

    return "".join(escape(char) for char in str(value))


def markdown_text(value: object) -> str:
    """Return ``value`` escaped so that Markdown renders exactly its characters."""
    text = MARKDOWN_INLINE.sub(r"\\\1", str(value))
    return MARKDOWN_BLOCK_START.sub(
        lambda match: (
            f"{match.group(1)}\\{match.group(2)}" if match.group(1) else f"\\{match.group(3)}"
        ),
        text,
        count=1,
    )


def project_folder(slug: object) -> str:
    """Return the slug when it is a safe folder name, else a fixed placeholder name."""
    text = str(slug)
    return text if SAFE_FOLDER.fullmatch(text) else INVALID_SLUG_FOLDER


class FiltersExtension(Extension):
    """Registers the filters of this module with cookiecutter's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml_escape"] = toml_escape
        environment.filters["markdown_text"] = markdown_text
        environment.filters["project_folder"] = project_folder
