"""Prune the files of options that are off, and write a git-ignored ``.env`` from the example.

Runs inside the rendered project. It needs no network and calls no other program, so that a
render is fast, works offline and can be repeated by ``cruft update``. All Jinja stays inside
``RAW_ANSWERS`` so the module imports unrendered for unit tests.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

RAW_ANSWERS = r"""{{ cookiecutter | jsonify }}"""

# The one manifest of optional paths: each exists only when its option has the given value,
# and is deleted otherwise. Paths are relative to the project root.
MANIFEST: dict[tuple[str, object], tuple[str, ...]] = {
    ("include_example", True): (
        "app/models/order.py",
        "app/orders",
        "migrations/versions/2026_11_28_0002-0004_orders.py",
        "tests/orders",
    ),
    # Without the example, this test checks that `just dev` gets ready and stops on Ctrl-C; with
    # it, tests/orders/test_dev_orders.py checks that and more, and the stack is slow to start.
    ("include_example", False): ("tests/test_dev.py",),
    ("use_docker", True): (
        "Dockerfile",
        "compose.yaml",
        ".dockerignore",
        # The Kubernetes manifests run the image the Dockerfile builds.
        "deploy",
    ),
    ("ci", "github"): (".github",),
}


def paths_to_prune(answers: dict[str, object]) -> list[str]:
    """Return the manifest paths whose option does not have the value they need."""
    return [
        path
        for (option, wanted), paths in MANIFEST.items()
        if answers.get(option) != wanted
        for path in paths
    ]


def prune(root: Path, paths: list[str]) -> None:
    """Delete each path under ``root``; a missing path is a bug in the manifest, so it raises."""
    for relative in paths:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()


def write_env(root: Path) -> bool:
    """Copy ``.env.example`` to ``.env`` unless one exists; return whether it was written.

    ``.env`` is private (mode 0600) from the start: it is where local secrets go.
    """
    env = root / ".env"
    if env.exists():
        return False
    env.write_text((root / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    env.chmod(0o600)
    return True


def remove_rendered_copy(script: Path) -> None:
    """Delete this rendered hook script, which cookiecutter leaves in the temp folder."""
    if script.suffix == ".py" and script.parent.resolve() == Path(tempfile.gettempdir()).resolve():
        script.unlink(missing_ok=True)


def main() -> int:
    """Prune, write ``.env`` and say what to do next."""
    remove_rendered_copy(Path(sys.argv[0]))
    answers = json.loads(RAW_ANSWERS)
    root = Path.cwd()
    prune(root, paths_to_prune(answers))
    write_env(root)
    print(
        f"Created {root.name}. Next: cd {root.name} && uv run just setup && uv run just check",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
