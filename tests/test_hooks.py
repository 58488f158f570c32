"""Unit tests of the hook helpers, imported from the unrendered hook files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hooks import post_gen_project as post
from hooks import pre_gen_project as pre

GOOD: dict[str, object] = {
    "project_name": "Orders Service",
    "project_slug": "orders-service",
    "project_description": "Takes orders.",
    "author_name": "Jane Doe",
    "author_email": "jane@example.com",
    "python_version": "3.13",
    "include_example": True,
    "use_docker": False,
    "ci": "none",
    "license": "MIT",
}


def test_good_answers_have_no_problems() -> None:
    assert pre.validate(GOOD) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("project_slug", "bad slug"),
        ("project_slug", ""),
        ("project_slug", "import"),
        ("project_slug", "Pydantic_Settings"),
        ("project_name", ""),
        ("project_description", "line\nbreak"),
        ("project_description", "tab\there"),
        ("project_name", "next\u0085line"),
        ("author_name", "para\u2029graph"),
        ("project_description", "{{ cookiecutter.project_slug }}"),
        ("project_name", "{% raw %}"),
        ("author_name", " Jane"),
        ("author_email", "@example.com"),
        ("python_version", "3.10"),
        ("ci", "gitlab"),
        ("license", "GPL"),
        ("use_docker", "maybe"),
    ],
)
def test_each_bad_answer_gives_one_problem_naming_it(key: str, value: object) -> None:
    [problem] = pre.validate(GOOD | {key: value})

    assert problem.startswith(f"{key} {value!r} ")
    assert "Example: " in problem


@pytest.mark.parametrize("slug", ["a/b", "a\\b", "..", ".", "/abs", "orders/../x"])
def test_slug_with_path_syntax_is_a_path_problem(slug: str) -> None:
    assert "is a path, not a single folder name" in pre.slug_problems(slug)


@pytest.mark.parametrize(
    "value",
    [
        'Ada\'s "Quoted" \\ Shop <&>',
        "ends with a backslash \\",
        "Café 🎉 — 👩\u200d💻 {braces} `ticks` *stars* _under_ # hash",
    ],
)
def test_printable_free_text_is_fine(value: str) -> None:
    answers = GOOD | {"project_name": value, "project_description": value, "author_name": value}

    assert pre.validate(answers) == []


def test_slug_with_underscores_and_digits_is_fine() -> None:
    assert pre.slug_problems("orders_v2-api") == []


@pytest.mark.parametrize(
    ("name", "normalised"), [("Taskiq_NATS", "taskiq-nats"), ("a.b__c", "a-b-c")]
)
def test_normalise_follows_pep_503(name: str, normalised: str) -> None:
    assert pre.normalise(name) == normalised


@pytest.mark.parametrize(
    ("value", "suggestion"),
    [
        ("My Service", "my-service"),
        ("9 Lives Café", "lives-caf"),
        ("!!!", "orders-service"),
        ("x" * 60, "x" * 40),
    ],
)
def test_suggested_slug_is_valid(value: str, suggestion: str) -> None:
    assert pre.suggest_slug(value) == suggestion
    assert pre.slug_problems(suggestion) == []


def test_format_errors_counts_and_lists() -> None:
    text = pre.format_errors(["a is bad", "b is bad"])

    assert text.splitlines()[0] == "ERROR: cannot create the project: 2 answers need fixing."
    assert "  - a is bad" in text
    assert "  - b is bad" in text


def test_paths_to_prune_follow_the_manifest() -> None:
    answers = {"include_example": True, "use_docker": False, "ci": "github"}

    assert post.paths_to_prune(answers) == [
        *post.MANIFEST[("include_example", False)],
        *post.MANIFEST[("use_docker", True)],
    ]


def test_prune_deletes_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    (tmp_path / "Dockerfile").write_text("")
    (tmp_path / "keep.txt").write_text("")

    post.prune(tmp_path, ["pkg", "Dockerfile"])

    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_prune_fails_loudly_on_a_dead_manifest_entry(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        post.prune(tmp_path, ["gone.txt"])


def test_env_is_a_private_copy_of_the_example(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("ENVIRONMENT=development\nLOG_LEVEL=INFO\n")

    assert post.write_env(tmp_path) is True

    assert (tmp_path / ".env").read_text() == "ENVIRONMENT=development\nLOG_LEVEL=INFO\n"
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


def test_existing_env_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("LOG_LEVEL=INFO\n")
    (tmp_path / ".env").write_text("API_TOKEN=mine\n")

    assert post.write_env(tmp_path) is False
    assert (tmp_path / ".env").read_text() == "API_TOKEN=mine\n"


def test_remove_rendered_copy_spares_files_outside_the_temp_folder(tmp_path: Path) -> None:
    script = tmp_path / "hook.py"
    script.write_text("")

    pre.remove_rendered_copy(script)

    assert script.exists()


def test_remove_rendered_copy_deletes_the_temp_copy(private_tmp: Path) -> None:
    script = private_tmp / "tmpabc123.py"
    script.write_text("")

    post.remove_rendered_copy(script)

    assert not script.exists()
