"""Generated projects take template updates: cruft create, a template change, cruft update."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.conftest import TEMPLATE_DIR, project_env, run

SLUG = "{{cookiecutter.__project_folder}}"
GIT_IDENTITY = ["-c", "user.name=Template Tests", "-c", "user.email=tests@example.com"]


def git(repo: Path, *args: str) -> None:
    run(["git", *GIT_IDENTITY, *args], cwd=repo)


def cruft(*args: str, cwd: Path, home: Path) -> str:
    command = [str(Path(sys.executable).parent / "cruft"), *args]
    return run(command, cwd=cwd, env=project_env(HOME=str(home))).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", message)


def test_cruft_update_applies_a_template_change_without_conflicts(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(
        TEMPLATE_DIR,
        template,
        ignore=shutil.ignore_patterns(".git", ".venv", "*_cache", "__pycache__", "uv.lock"),
    )
    git(template, "init", "--quiet")
    commit_all(template, "template v1")
    out, home = tmp_path / "out", tmp_path / "home"
    out.mkdir()
    home.mkdir()

    cruft("create", str(template), "--no-input", "--output-dir", str(out), cwd=tmp_path, home=home)
    project = out / "orders-service"
    env = project / ".env"
    env.write_text(env.read_text() + "API_TOKEN=local-only\n")
    secret = env.read_bytes()
    git(project, "init", "--quiet")
    main_py = project / "app" / "main.py"
    main_py.write_text(main_py.read_text() + "# a change of the project's own\n")
    commit_all(project, "project, created from v1")

    readme = template / SLUG / "README.md"
    readme.write_text(readme.read_text() + "\n## Changelog\n\nKept in CHANGES.md.\n")
    (template / SLUG / "CHANGES.md").write_text("# Changes\n")
    commit_all(template, "template v2")

    cruft("update", "--skip-apply-ask", "--allow-untracked-files", cwd=project, home=home)

    assert sorted(p.name for p in project.rglob("*.rej")) == []
    assert "## Changelog" in (project / "README.md").read_text()
    assert (project / "CHANGES.md").read_text() == "# Changes\n"
    assert main_py.read_text().endswith("# a change of the project's own\n")
    assert (project / ".env").read_bytes() == secret, "the local secrets must survive"
    cruft("check", cwd=project, home=home)
