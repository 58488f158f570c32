"""Unit tests of the Jinja filters that escape free text per file type."""

from __future__ import annotations

import tomllib

import pytest
from markdown_it import MarkdownIt

from fastapi_taskiq_filters import (
    INVALID_SLUG_FOLDER,
    markdown_text,
    project_folder,
    toml_escape,
)
from hooks import pre_gen_project as pre

HOSTILE_TEXTS = [
    "Orders Service",
    'Ada\'s "Quoted" \\ Shop <&>',
    "ends with a backslash \\",
    "\"\"\" triple quotes '''",
    'Say "hi" & <b>bold</b> &amp; &#65; <!-- x --> <https://example.com>',
    "*stars* _under_ **bold** `code` ``two`` [link](https://x.y) ![img](a.png)",
    "# not a heading #",
    "- not a list",
    "+ not a list",
    "1. not a list",
    "42) not a list",
    "> not a quote",
    "= not a heading",
    "--- not a rule",
    "~~not struck~~ | not | a table | $x^2$ math",
    "C# and F# # trailing hashes ##",
    "Café Ümlaut — 🎉 👩\u200d💻 {{ braces }} {% block %}",
    "back\\slash\\*star\\_under",
]

MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def shown_text(markdown: str) -> str:
    """The text a Markdown renderer shows for one block; fails on any markup in it."""
    tokens = MARKDOWN.parse(markdown)
    inlines = [token for token in tokens if token.type == "inline"]
    assert len(inlines) == 1, [token.type for token in tokens]
    children = inlines[0].children or []
    assert {child.type for child in children} <= {"text"}, [child.type for child in children]
    return "".join(child.content for child in children)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_toml_escape_gives_the_text_back(text: str) -> None:
    document = f'value = "{toml_escape(text)}"\n'

    assert tomllib.loads(document) == {"value": text}


def test_toml_escape_escapes_control_characters() -> None:
    assert tomllib.loads(f'v = "{toml_escape("a\tb\nc\x01\x7f")}"') == {"v": "a\tb\nc\x01\x7f"}


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_markdown_text_shows_literally_in_a_heading(text: str) -> None:
    markdown = f"# {markdown_text(text)}\n"

    assert shown_text(markdown) == text
    assert MARKDOWN.parse(markdown)[0].type == "heading_open"


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_markdown_text_shows_literally_in_a_paragraph(text: str) -> None:
    markdown = f"# Title\n\n{markdown_text(text)}\n\nNext paragraph.\n"
    tokens = MARKDOWN.parse(markdown)

    assert [token.type for token in tokens if token.nesting == 1] == [
        "heading_open",
        "paragraph_open",
        "paragraph_open",
    ]
    paragraph = tokens[4]
    assert paragraph.type == "inline"
    assert all(child.type == "text" for child in paragraph.children or [])
    assert "".join(child.content for child in paragraph.children or []) == text


def test_markdown_text_leaves_plain_words_alone() -> None:
    text = "A FastAPI service with TaskIQ workers on NATS JetStream and PostgreSQL."

    assert markdown_text(text) == text


@pytest.mark.parametrize(
    "slug", ["orders-service", "cafe_orders2", "a", "a" * 40, "orders_v2-api", "class", "fastapi"]
)
def test_project_folder_is_the_slug_for_a_plain_name(slug: str) -> None:
    assert project_folder(slug) == slug


@pytest.mark.parametrize(
    "slug",
    ["a/b", "a\\b", "..", ".", "", "/abs", "~x", "x/../../y", "Orders", "café", "a b", "a" * 300],
)
def test_project_folder_is_the_placeholder_for_anything_else(slug: str) -> None:
    assert project_folder(slug) == INVALID_SLUG_FOLDER


def test_every_valid_slug_is_its_own_folder() -> None:
    # The hook accepts a slug only when the folder is the slug: the two rules must not drift.
    for slug in ["orders-service", "x" * 40, "a1_b2-c3", "service9"]:
        assert pre.slug_problems(slug) == []
        assert project_folder(slug) == slug
