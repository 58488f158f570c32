"""Fixtures that render the template: a cached ``bake(**answers)`` and the tools to inspect it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
TEMPLATE_KEYS = frozenset(json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text()))

Bake = Callable[..., Path]


def check_answer_keys(answers: dict[str, object]) -> None:
    """Refuse answers cookiecutter would silently ignore (a typo would test nothing)."""
    unknown = sorted(set(answers) - {key for key in TEMPLATE_KEYS if not key.startswith("_")})
    if unknown:
        msg = f"not options of cookiecutter.json: {', '.join(unknown)}"
        raise KeyError(msg)


def render(answers: dict[str, object], output_dir: Path, config_dir: Path) -> Path:
    """Render the template with ``answers`` into ``output_dir``; return the project folder.

    A private cookiecutter config keeps the user's ``~/.cookiecutterrc`` out and the replay file
    out of their home folder.
    """
    check_answer_keys(answers)
    config = config_dir / "cookiecutter.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(config_dir / 'templates'))}\n"
        f"replay_dir: {json.dumps(str(config_dir / 'replay'))}\n"
    )
    project = cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        extra_context=answers,
        output_dir=str(output_dir),
        config_file=str(config),
        accept_hooks=True,
    )
    return Path(project)


@pytest.fixture(scope="session")
def bake(tmp_path_factory: pytest.TempPathFactory) -> Bake:
    """Render once per answer set and test run (per xdist worker), then reuse the folder."""
    cache: dict[str, Path] = {}
    config_dir = tmp_path_factory.mktemp("cookiecutter-config")

    def _bake(**answers: object) -> Path:
        key = json.dumps(answers, sort_keys=True)
        if key not in cache:
            cache[key] = render(answers, tmp_path_factory.mktemp("bake"), config_dir)
        return cache[key]

    return _bake


@pytest.fixture
def private_tmp(tmp_path: Path) -> Iterator[Path]:
    """Point the temp folder (ours and cookiecutter's hooks') at an empty, private one."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        yield folder
    tempfile.tempdir = previous


def project_env(**overrides: str | None) -> dict[str, str]:
    """The environment for commands in a rendered project: no outer virtualenv leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env if env is not None else project_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def ruff(*args: str) -> list[str]:
    """The ruff command of this environment (same minor series as the generated projects)."""
    return [sys.executable, "-m", "ruff", *args]
