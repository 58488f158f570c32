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
    "unusual-text": {
        "project_name": "Café Ümlaut Ordering",
        "project_slug": "cafe_orders2",
        "project_description": "Orders & <stuff>: 100% async, O'Brien's — fast {braces}",
        "author_name": "Zoë O'Brien-Łukasz",
        "author_email": "zoe+orders@sub.example.co.uk",
    },
}


def answer_sets() -> list[object]:
    """The sets as pytest parameters with readable ids."""
    return [pytest.param(answers, id=name) for name, answers in ANSWER_SETS.items()]
