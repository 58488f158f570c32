"""Static checks of the container and CI files (no Docker engine is needed, or used)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.answers import ANSWER_SETS
from tests.conftest import Bake, run

SHIPPING_SETS = [
    pytest.param(ANSWER_SETS["defaults"], id="defaults"),
    pytest.param(ANSWER_SETS["python-3.12"], id="python-3.12"),
    pytest.param(ANSWER_SETS["license-proprietary"], id="license-proprietary"),
]


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: it is a dev dependency of the template"
    return path


@pytest.mark.parametrize("answers", SHIPPING_SETS)
def test_dockerfile_passes_hadolint(bake: Bake, answers: dict[str, object]) -> None:
    project = bake(**answers)

    run([tool("hadolint"), "--no-color", "Dockerfile"], cwd=project)


@pytest.mark.parametrize("answers", SHIPPING_SETS)
def test_compose_file_matches_the_compose_spec(bake: Bake, answers: dict[str, object]) -> None:
    project = bake(**answers)

    run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=project,
    )


@pytest.mark.parametrize("answers", SHIPPING_SETS)
def test_ci_workflow_matches_the_github_schema(bake: Bake, answers: dict[str, object]) -> None:
    project = bake(**answers)

    run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            ".github/workflows/ci.yml",
        ],
        cwd=project,
    )


def recipes(project: Path) -> set[str]:
    names = set()
    for line in (project / "justfile").read_text().splitlines():
        if line and not line[0].isspace() and ":" in line and not line.startswith(("#", "set ")):
            names.add(line.split(":")[0].split()[0])
    return names


def test_justfile_has_every_documented_recipe(bake: Bake) -> None:
    project = bake()

    assert {
        "setup",
        "dev",
        "worker",
        "scheduler",
        "test",
        "lint",
        "fmt",
        "typecheck",
        "migrate",
        "check",
    } <= recipes(project)


def test_ci_workflow_runs_the_justfile_recipes(bake: Bake) -> None:
    project = bake()
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())

    commands = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    for recipe in ("lint", "typecheck", "test"):
        assert f"uv run just {recipe}" in commands
        assert recipe in recipes(project)
    script = "\n".join(commands)
    assert "alembic check" in script
    assert "-js" in script, "the tests need NATS with JetStream"


def test_compose_commands_use_the_image_entry_points(bake: Bake) -> None:
    project = bake()
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    dependencies = " ".join(meta["project"]["dependencies"])

    commands = [
        service["command"]
        for service in compose["services"].values()
        if isinstance(service.get("command"), list) and service.get("build") is not None
    ]
    executables = {command[0] for command in commands}
    assert executables == {"alembic", "taskiq", "python"}
    for executable in executables - {"python"}:
        assert executable in dependencies
    # `python -m` runs a module of the project (the worker: taskiq worker with the app's logging).
    for command in commands:
        if command[0] == "python":
            assert command[1] == "-m"
            assert (project / command[2].replace(".", "/") / "__main__.py").is_file(), command
    for name in ("worker", "scheduler"):
        target = next(arg for arg in compose["services"][name]["command"] if ":" in arg)
        module, _, attribute = target.partition(":")
        source = (project / module.replace(".", "/")).with_suffix(".py").read_text()
        assert f"\n{attribute} = " in source, target
    assert compose["services"]["worker"].get("container_name") is None
    assert "ports" not in compose["services"]["worker"]


def test_pre_commit_hooks_are_all_local(bake: Bake) -> None:
    project = bake()
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())

    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert set(hooks) == {"ruff-check", "ruff-format", "mypy"}
    assert all(hook["entry"].startswith("uv run ") for hook in hooks.values())
