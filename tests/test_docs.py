"""The Markdown docs of every render name only files, modules and names that render has.

Each inline code span (`...`) of every ``*.md`` file is split into words, and the words that can
be checked are:

- paths (``app/orders/tasks.py``, ``tests/``, globs such as ``app/**/tasks.py``): exist;
- dotted names under the project's packages (``app.core.outbox``, ``app.main:create_app``,
  ``python -m app.worker.probe``): the module is a file, and the names after it appear in it;
- file names alone (``exceptions.py``): some folder of the render has one;
- CamelCase names (``QueuedOrderTasks``) and snake_case names (``order_id``): appear as a word in
  some Python file of the render outside ``tests/`` (whose sample data would hide a stale name).

Everything else (commands, environment variables, plain words, placeholders in ``<...>``, HTTP
paths) is out of scope; ``EXTERNAL`` lists the few names that belong to other projects.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.answers import answer_sets
from tests.conftest import Bake

MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])

# Names from other projects or protocols that a doc may mention without the render defining them.
EXTERNAL = frozenset(
    {
        "HTTPException",  # FastAPI's, which the house rules forbid in services
        "application/problem+json",  # a media type
        ".devdata/",  # created by `just dev`, git-ignored
        "TaskIQ",  # the project's name, as its docs spell it
        "model_validate_json",  # pydantic's, named by the house rules for reads
        "model_dump_json()",
        "max_connections",  # PostgreSQL's setting
    }
)
PACKAGES = ("app", "devtools", "tests", "migrations")
FILE_SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".ini", ".mako", ".env", ".example")

WORD = re.compile(r"[^\s()\[\]{},;=\"'|`]+")
CAMEL_CASE = re.compile(r"_?[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+")
SNAKE_CASE = re.compile(r"_?[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
DOTTED = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?::[A-Za-z_]\w*)?")


def code_spans(markdown: str) -> list[str]:
    """The inline code spans of a Markdown text, tables included, fenced blocks excluded."""
    spans: list[str] = []
    for token in MARKDOWN.parse(markdown):
        if token.type == "inline":
            spans += [
                child.content for child in token.children or [] if child.type == "code_inline"
            ]
    return spans


@cache
def python_words(project: Path) -> frozenset[str]:
    """Every identifier-like word of the render's Python code (its tests' sample data aside)."""
    words: set[str] = set()
    for path in project.rglob("*.py"):
        if path.relative_to(project).parts[0] == "tests":
            continue
        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path.read_text(encoding="utf-8")))
    return frozenset(words)


def module_file(project: Path, dotted: str) -> tuple[Path | None, list[str]]:
    """The file of the longest module prefix of ``dotted``, and the names after it."""
    parts = dotted.replace(":", ".").split(".")
    for end in range(len(parts), 0, -1):
        base = project.joinpath(*parts[:end])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[end:]
    return None, parts


def problems_of_word(project: Path, word: str) -> str | None:
    """What is wrong with one word of a code span; None when it checks out or is out of scope."""
    word = word.rstrip(".:")
    if not word or word in EXTERNAL or "<" in word or "://" in word or word.startswith(("/", "-")):
        return None
    if DOTTED.fullmatch(word):
        path, names = module_file(project, word)
        if path is None:
            return f"module {word} has no file"
        text = path.read_text(encoding="utf-8")
        missing = [name for name in names if not re.search(rf"\b{re.escape(name)}\b", text)]
        return (
            f"{word}: {', '.join(missing)} not in {path.relative_to(project)}" if missing else None
        )
    if "/" in word or word.endswith(FILE_SUFFIXES):
        if "*" in word:
            return None if any(project.glob(word)) else f"no file matches {word}"
        if "/" not in word:  # a file name alone: some folder of the render has it
            return None if any(project.rglob(word)) else f"no file named {word}"
        return None if (project / word).exists() else f"no file {word}"
    names = [
        part
        for part in re.split(r"[.:]", word)
        if CAMEL_CASE.fullmatch(part) or SNAKE_CASE.fullmatch(part)
    ]
    missing = [name for name in names if name not in python_words(project)]
    return f"{', '.join(missing)} (in `{word}`) not in any Python file" if missing else None


def doc_problems(project: Path) -> list[str]:
    """Every name a Markdown doc of ``project`` mentions that the project does not have."""
    problems: list[str] = []
    for doc in sorted(project.rglob("*.md")):
        for span in code_spans(doc.read_text(encoding="utf-8")):
            if span in EXTERNAL:
                continue
            for word in WORD.findall(span):
                problem = problems_of_word(project, word)
                if problem:
                    problems.append(f"{doc.relative_to(project)}: {problem}")
    return sorted(set(problems))


@pytest.mark.parametrize("answers", answer_sets())
def test_docs_name_only_what_the_render_has(bake: Bake, answers: dict[str, object]) -> None:
    project = bake(**answers)

    assert doc_problems(project) == []


def test_the_check_finds_a_missing_name(bake: Bake) -> None:
    project = bake(include_example=False)
    fake = project.parent / "fake-project"
    fake.mkdir(exist_ok=True)
    (fake / "app").mkdir(exist_ok=True)
    (fake / "app" / "main.py").write_text("def create_app() -> None: ...\n")
    (fake / "README.md").write_text(
        "Use `app/main.py`, `app.main:create_app`, `app/orders/tasks.py`, `app.orders.service`,\n"
        "`QueuedOrderTasks`, `log.info(order_id=...)`, `app.main:missing`, `uv run just dev`,\n"
        "`DATABASE_URL`, `<domain>/`, `GET /health/live`.\n"
    )

    assert doc_problems(fake) == [
        "README.md: QueuedOrderTasks (in `QueuedOrderTasks`) not in any Python file",
        "README.md: app.main:missing: missing not in app/main.py",
        "README.md: module app.orders.service has no file",
        "README.md: no file app/orders/tasks.py",
        "README.md: order_id (in `order_id`) not in any Python file",
    ]
