"""Fast checks on every curated answer set: the render itself, its files, and its lint."""

from __future__ import annotations

import ast
import json
import re
import stat
import tomllib
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from hooks.post_gen_project import MANIFEST
from tests.answers import ANSWER_SETS, answer_sets
from tests.conftest import TEMPLATE_DIR, Bake, check_answer_keys, render, ruff, run

DEFAULTS: dict[str, object] = {
    key: (value[0] if isinstance(value, list) else value)
    for key, value in json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text()).items()
    if not key.startswith("_")
}

ALWAYS_PRESENT = [
    ".env",
    ".env.example",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".python-version",
    "AGENTS.md",
    "CLAUDE.md",
    "LICENSE",
    "README.md",
    "app/__init__.py",
    "app/main.py",
    "app/settings.py",
    "app/core/errors.py",
    "app/core/logging.py",
    "app/health/router.py",
    "app/worker/broker.py",
    "app/core/outbox.py",
    "app/core/unit_of_work.py",
    "app/worker/dead_letters.py",
    "app/worker/delivery.py",
    "app/worker/probe.py",
    "app/worker/scheduler.py",
    "app/worker/tasks.py",
    "alembic.ini",
    "migrations/env.py",
    "migrations/versions/2026_11_27_0000-0001_initial.py",
    "migrations/versions/2026_11_28_0000-0002_outbox.py",
    "devtools/dev.py",
    "devtools/embedded.py",
    "justfile",
    "pyproject.toml",
    "tests/conftest.py",
    "tests/health/test_router.py",
]

LEFTOVER_JINJA = re.compile(r"\{\{\s*cookiecutter|\{%-?\s|\s-?%\}")
# Files the generated project must never contain.
FORBIDDEN_NAMES = re.compile(
    r"(^|/)(__pycache__|\.ruff_cache|\.mypy_cache|\.pytest_cache|\.venv|.*\.rej|.*\.orig|uv\.lock)$"
)


def files_of(project: Path) -> list[Path]:
    return sorted(path for path in project.rglob("*") if path.is_file())


def relative_names(project: Path) -> set[str]:
    return {path.relative_to(project).as_posix() for path in project.rglob("*")}


def answers_with_defaults(answers: dict[str, object]) -> dict[str, object]:
    return DEFAULTS | answers


def test_every_answer_set_uses_real_options() -> None:
    for answers in ANSWER_SETS.values():
        check_answer_keys(answers)


def test_unknown_answer_key_is_refused() -> None:
    with pytest.raises(KeyError, match="use_dokcer"):
        check_answer_keys({"use_dokcer": False})


@pytest.mark.parametrize("answers", answer_sets())
class TestEveryAnswerSet:
    def test_renders_into_the_slug_folder(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)

        expected = answers.get("project_slug", "orders-service")
        assert project.name == expected
        assert project.is_dir()

    def test_no_template_syntax_is_left(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)

        for name in relative_names(project):
            assert "{{" not in name, name
            assert "{%" not in name, name
        leftovers = [
            f"{path.relative_to(project)}: {match.group(0)!r}"
            for path in files_of(project)
            for match in LEFTOVER_JINJA.finditer(path.read_text(encoding="utf-8"))
        ]
        assert leftovers == []

    def test_optional_paths_follow_the_answers(
        self, bake: Bake, answers: dict[str, object]
    ) -> None:
        project = bake(**answers)
        chosen = answers_with_defaults(answers)

        for (option, wanted), paths in MANIFEST.items():
            for path in paths:
                assert (project / path).exists() is (chosen[option] == wanted), (option, path)
        for path in ALWAYS_PRESENT:
            assert (project / path).is_file(), path

    def test_no_stray_files(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)

        assert [n for n in relative_names(project) if FORBIDDEN_NAMES.search(n)] == []
        empty_dirs = [p for p in project.rglob("*") if p.is_dir() and not any(p.iterdir())]
        assert empty_dirs == []

    def test_structured_files_parse(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)
        chosen = answers_with_defaults(answers)

        for path in files_of(project):
            if path.suffix in {".yaml", ".yml"}:
                # Kubernetes manifests hold several documents.
                documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
                assert documents, path
                assert all(document is not None for document in documents), path
            elif path.suffix == ".toml":
                tomllib.loads(path.read_text(encoding="utf-8"))
        meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        assert meta["project"]["name"] == project.name
        assert meta["project"]["description"] == chosen["project_description"]
        assert meta["project"]["authors"] == [
            {"name": chosen["author_name"], "email": chosen["author_email"]}
        ]
        assert meta["project"]["requires-python"] == f">={chosen['python_version']}"
        assert meta["tool"]["mypy"]["python_version"] == chosen["python_version"]
        assert meta["tool"]["ruff"]["target-version"] == "py" + str(
            chosen["python_version"]
        ).replace(".", "")
        assert (project / ".python-version").read_text().strip() == chosen["python_version"]

    def test_license_matches_the_choice(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)
        chosen = answers_with_defaults(answers)
        text = (project / "LICENSE").read_text(encoding="utf-8")
        meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))

        expected = {
            "MIT": ("MIT License", "MIT"),
            "Apache-2.0": ("Apache License", "Apache-2.0"),
            "Proprietary": ("All rights reserved", "LicenseRef-Proprietary"),
        }[str(chosen["license"])]
        assert expected[0] in text
        assert str(chosen["author_name"]) in text or chosen["license"] == "Apache-2.0"
        assert meta["project"]["license"] == expected[1]

    def test_ruff_check_passes_without_fixes(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)

        run(ruff("check", "--no-fix", "--no-cache", "."), cwd=project)
        run(ruff("format", "--check", "--no-cache", "."), cwd=project)

    def test_no_relative_imports(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)

        relative = [
            f"{path.relative_to(project)}:{node.lineno}"
            for path in project.rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and node.level > 0
        ]
        assert relative == []
        meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        assert "TID" in meta["tool"]["ruff"]["lint"]["select"]
        tidy = meta["tool"]["ruff"]["lint"]["flake8-tidy-imports"]
        assert tidy["ban-relative-imports"] == "all"

    def test_env_is_a_private_copy_of_the_example(
        self, bake: Bake, answers: dict[str, object]
    ) -> None:
        project = bake(**answers)

        assert (project / ".env").read_bytes() == (project / ".env.example").read_bytes()
        assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
        assert ".env" in (project / ".gitignore").read_text().splitlines()

    def test_free_text_shows_literally_in_the_docs(
        self, bake: Bake, answers: dict[str, object]
    ) -> None:
        project = bake(**answers)
        chosen = answers_with_defaults(answers)

        readme = MARKDOWN.parse((project / "README.md").read_text(encoding="utf-8"))
        agents = MARKDOWN.parse((project / "AGENTS.md").read_text(encoding="utf-8"))
        assert readme[0].type == "heading_open"
        assert plain_text(readme[1]) == chosen["project_name"]
        assert readme[3].type == "paragraph_open"
        assert plain_text(readme[4]) == chosen["project_description"]
        assert agents[0].type == "heading_open"
        assert plain_text(agents[1]) == f"Working on {chosen['project_name']}"
        license_text = (project / "LICENSE").read_text(encoding="utf-8")
        if chosen["license"] != "Apache-2.0":
            assert f"Copyright (c) {chosen['author_name']}" in license_text


MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def plain_text(inline: Token) -> str:
    """The text an inline Markdown token shows; fails when it holds any markup."""
    assert inline.type == "inline"
    children = inline.children or []
    assert {child.type for child in children} <= {"text"}, [child.type for child in children]
    return "".join(child.content for child in children)


@pytest.mark.parametrize("answers", answer_sets())
def test_same_answers_give_the_same_bytes(tmp_path: Path, answers: dict[str, object]) -> None:
    first = render(answers, tmp_path / "one", tmp_path)
    second = render(answers, tmp_path / "two", tmp_path)

    def snapshot(project: Path) -> dict[str, bytes]:
        return {
            path.relative_to(project).as_posix(): path.read_bytes() for path in files_of(project)
        }

    assert ".env" in snapshot(first)
    assert snapshot(first) == snapshot(second)


def test_free_text_changes_no_code(bake: Bake) -> None:
    """The text answers reach only the docs and the metadata (the API's title is read from
    pyproject.toml), so the code passes ruff and mypy exactly as it does with plain answers (the
    deep tests run mypy on those)."""
    unusual = ANSWER_SETS["unusual-text"]
    plain = bake(project_slug=unusual["project_slug"])
    text = bake(**unusual)

    def code(project: Path) -> dict[str, bytes]:
        return {
            path.relative_to(project).as_posix(): path.read_bytes()
            for path in files_of(project)
            if path.name not in {"pyproject.toml", "README.md", "AGENTS.md", "LICENSE"}
        }

    assert code(text) == code(plain)
    plain_meta = tomllib.loads((plain / "pyproject.toml").read_text(encoding="utf-8"))
    text_meta = tomllib.loads((text / "pyproject.toml").read_text(encoding="utf-8"))
    for meta in (plain_meta, text_meta):
        del meta["project"]["description"], meta["project"]["authors"]
        del meta["tool"]["service"]["title"]
    assert text_meta == plain_meta
