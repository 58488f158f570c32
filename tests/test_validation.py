"""Bad answers: a clear message naming each one, exit status 1, and nothing left on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException

from tests.conftest import TEMPLATE_DIR, project_env, render

BAD_ANSWERS = [
    pytest.param("project_slug", "my service", "contains spaces", id="slug-spaces"),
    pytest.param("project_slug", "2fast", "starts with a digit", id="slug-leading-digit"),
    pytest.param("project_slug", "class", "Python keyword", id="slug-keyword"),
    pytest.param("project_slug", "caf\u00e9", "non-ASCII", id="slug-non-ascii"),
    pytest.param("project_slug", "a" * 41, "at most 40", id="slug-too-long"),
    pytest.param("project_slug", "Orders", "uppercase", id="slug-uppercase"),
    pytest.param("project_slug", "orders--svc", "single hyphens", id="slug-double-hyphen"),
    pytest.param("project_slug", "fastapi", "clashes with the dependency", id="slug-fastapi"),
    pytest.param("project_slug", "taskiq", "clashes with the dependency", id="slug-taskiq"),
    pytest.param("project_slug", "sqlalchemy", "clashes", id="slug-sqlalchemy"),
    pytest.param("project_slug", "taskiq_nats", "'taskiq-nats'", id="slug-taskiq-nats"),
    pytest.param("author_email", "jane", "not an email address", id="email-no-at"),
    pytest.param("author_email", "jane@", "not an email address", id="email-no-domain"),
    pytest.param("author_email", "jane@example", "not an email address", id="email-no-tld"),
    pytest.param("author_email", "ja ne@example.com", "not an email", id="email-space"),
    pytest.param("project_name", "", "is empty", id="name-empty"),
    pytest.param("project_name", "   ", "is empty", id="name-blank"),
    pytest.param("author_name", "", "is empty", id="author-empty"),
    pytest.param("project_description", "tab\there", "control character", id="description-tab"),
]


def cookiecutter_cli(
    tmp_path: Path, *answers: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run the real CLI with a private home, temp folder and output folder."""
    out, home, tmp = tmp_path / "out", tmp_path / "home", tmp_path / "tmp"
    for folder in (out, home, tmp):
        folder.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--default-config",
            "--output-dir",
            str(out),
            str(TEMPLATE_DIR),
            *answers,
        ],
        env=project_env(HOME=str(home), TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, out, tmp


@pytest.mark.parametrize(("key", "value", "reason"), BAD_ANSWERS)
def test_bad_answer_fails_clearly_and_leaves_nothing(
    tmp_path: Path, key: str, value: str, reason: str
) -> None:
    result, out, tmp = cookiecutter_cli(tmp_path, f"{key}={value}")

    assert result.returncode == 1
    first_line = result.stderr.lstrip().splitlines()[0]
    assert first_line == "ERROR: cannot create the project: 1 answer needs fixing."
    [problem] = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert problem.startswith(f"  - {key} {value!r}")
    assert reason in problem
    assert "Example:" in problem
    assert list(out.iterdir()) == []
    assert list(tmp.iterdir()) == []


def snapshot(folder: Path) -> list[str]:
    """Every path under ``folder``, so a test can tell that nothing changed there."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


@pytest.mark.parametrize("slug", ["a/b", "a\\b", "..", ".", "/abs", "~x", "x/../../y"])
def test_slug_with_path_syntax_fails_clearly_and_touches_nothing(tmp_path: Path, slug: str) -> None:
    """Refused before any folder named by the slug exists, wherever the command runs from."""
    # The output folder, the working folder and their parent; the temp folder of the hooks too.
    # (Cookiecutter's replay file in the private home is its own business.)
    work, home = tmp_path / "work", tmp_path / "home"
    out, cwd, tmp = work / "out", work / "cwd", work / "tmp"
    for folder in (out, cwd, home, tmp):
        folder.mkdir(parents=True)
    (cwd / "keep.txt").write_text("mine\n")
    before = snapshot(work)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--default-config",
            "--output-dir",
            str(out),
            str(TEMPLATE_DIR),
            f"project_slug={slug}",
        ],
        cwd=cwd,
        env=project_env(HOME=str(home), TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert result.stderr.lstrip().startswith("ERROR: cannot create the project: 1 answer needs")
    [problem] = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert problem.startswith(f"  - project_slug {slug!r}")
    assert "Example:" in problem
    if slug != "~x":
        assert "is a path, not a single folder name" in problem
    assert snapshot(work) == before
    assert not Path("/abs").exists()


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    result, out, _ = cookiecutter_cli(
        tmp_path, "project_slug=9 Lives", "author_email=nope", "author_name="
    )

    assert result.returncode == 1
    assert "3 answers need fixing" in result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert [line.split()[1] for line in problems] == [
        "project_slug",
        "author_name",
        "author_email",
    ]
    assert "contains spaces" in problems[0]
    assert "starts with a digit" in problems[0]
    assert list(out.iterdir()) == []


def test_good_answers_leave_no_hook_scripts_behind(tmp_path: Path) -> None:
    result, out, tmp = cookiecutter_cli(tmp_path, "project_slug=tidy-service")

    assert result.returncode == 0, result.stderr
    assert [path.name for path in out.iterdir()] == ["tidy-service"]
    assert list(tmp.iterdir()) == []


def test_api_raises_and_removes_the_project(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(FailedHookException):
        render({"project_slug": "bad slug"}, out, tmp_path)

    assert list(out.iterdir()) == []


def test_suggested_slug_for_a_bad_one_is_valid(tmp_path: Path) -> None:
    result, _, _ = cookiecutter_cli(tmp_path, "project_slug=My Shiny Service!")

    assert "Example: 'my-shiny-service'" in result.stderr
