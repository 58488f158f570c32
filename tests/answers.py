"""The curated answer sets: defaults, everything on, everything off, each option toggled."""

from __future__ import annotations

import pytest

ANSWER_SETS: dict[str, dict[str, object]] = {
    "defaults": {},
    "everything-on": {
        "include_example": True,
        "use_docker": True,
        "ci": "github",
        "license": "Apache-2.0",
    },
    "everything-off": {
        "python_version": "3.12",
        "include_example": False,
        "use_docker": False,
        "ci": "none",
        "license": "Proprietary",
    },
    "python-3.12": {"python_version": "3.12"},
    "no-example": {"include_example": False},
    "no-docker": {"use_docker": False},
    "no-ci": {"ci": "none"},
    "license-apache": {"license": "Apache-2.0"},
    "license-proprietary": {"license": "Proprietary"},
    # Every printable character a person may type: quotes, backslashes (one at the end), HTML,
    # Markdown syntax, braces, accents and emoji. Each file must show them exactly.
    "unusual-text": {
        "project_name": 'Ada\'s "Quoted" \\ Café Shop <&> #1',
        "project_slug": "cafe_orders2",
        "project_description": (
            "Orders & <b>stuff</b>: \"100%\" async, *fast* `code` _x_ O'Brien's — {braces} 🎉 \\"
        ),
        "author_name": 'Zoë O\'Brien-Łukasz "Bob" \\ <x>',
        "author_email": "zoe+orders@sub.example.co.uk",
    },
}


def answer_sets() -> list[object]:
    """The sets as pytest parameters with readable ids."""
    return [pytest.param(answers, id=name) for name, answers in ANSWER_SETS.items()]
