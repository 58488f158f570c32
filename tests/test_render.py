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
                assert yaml.safe_load(path.read_text(encoding="utf-8")) is not None, path
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

    def test_env_has_a_fresh_private_secret(self, bake: Bake, answers: dict[str, object]) -> None:
        project = bake(**answers)
        env = (project / ".env").read_text()

        [secret] = re.findall(r"^SECRET_KEY=(.*)$", env, flags=re.MULTILINE)
        assert secret != "change-me"
        assert len(secret) >= 32
        assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
        assert ".env" in (project / ".gitignore").read_text().splitlines()
        assert "change-me" in (project / ".env.example").read_text()


@pytest.mark.parametrize("answers", answer_sets())
def test_same_answers_give_the_same_bytes(tmp_path: Path, answers: dict[str, object]) -> None:
    first = render(answers, tmp_path / "one", tmp_path)
    second = render(answers, tmp_path / "two", tmp_path)

    def snapshot(project: Path) -> dict[str, bytes]:
        return {
            path.relative_to(project).as_posix(): path.read_bytes()
            for path in files_of(project)
            if path.name != ".env"
        }

    assert snapshot(first) == snapshot(second)
    # The one file allowed to differ holds the secrets, and they do differ.
    assert (first / ".env").read_bytes() != (second / ".env").read_bytes()
