"""Field types whose OpenAPI schema says exactly what their validation accepts.

A client (or a schema fuzzer) that builds a value from the schema gets it accepted, and one the
schema refuses is refused: pydantic's own ``Decimal`` schema admits strings such as ``""`` that
its validation rejects, and ``EmailStr`` rejects addresses (``a@b.test``) that ``format: email``
admits.
"""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# An address of the plain form everyone accepts: a dot-atom local part (RFC 5322) at a domain of
# two or more hostname labels (RFC 1123). No quoted local parts, IP literals or non-ASCII
# addresses. Special-use domains (example.com, b.test) are fine: mail is not sent from here.
EMAIL_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$"
EMAIL_MAX_LENGTH = 254  # the longest address SMTP carries (RFC 5321's path, less its brackets)
# The longest local part (RFC 5321 4.5.3.1.1). The pattern cannot count it; `format: email`,
# which the schema states too, does.
EMAIL_LOCAL_MAX_LENGTH = 64


def _check_and_normalise(address: str) -> str:
    local, _, domain = address.rpartition("@")
    if len(local) > EMAIL_LOCAL_MAX_LENGTH:
        raise PydanticCustomError(
            "email_local_too_long",
            "The part before @ should have at most {limit} characters",
            {"limit": EMAIL_LOCAL_MAX_LENGTH},
        )
    # The domain is case-insensitive, the local part is not (RFC 5321 2.4).
    return f"{local}@{domain.lower()}"


class _EmailFormat:
    """Adds ``format: email`` to the schema (the pattern is the rule; the format informs)."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["format"] = "email"
        return json_schema


Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN),
    AfterValidator(_check_and_normalise),
    _EmailFormat(),
]


@dataclass(frozen=True)
class DecimalFormat:
    """A non-negative decimal with at most ``whole_digits`` digits before the point and
    ``decimal_places`` after it (a ``NUMERIC(whole_digits + decimal_places, decimal_places)``).

    Accepted as a JSON string of exactly that form (``"9.50"``; no sign, exponent, blanks or
    bare point) or as a JSON number within bounds and a multiple of the smallest unit. The schema
    states both forms with those bounds. The value has the scale of the column: ``"9.5"`` is
    ``Decimal("9.50")``.
    """

    whole_digits: int
    decimal_places: int

    @property
    def pattern(self) -> str:
        # Built without doubled braces: the template engine would read them as its own.
        whole = "{1," + str(self.whole_digits) + "}"
        places = "{1," + str(self.decimal_places) + "}"
        return rf"^[0-9]{whole}(\.[0-9]{places})?$"

    @property
    def maximum(self) -> Decimal:
        return Decimal(10) ** self.whole_digits - Decimal(10) ** -self.decimal_places

    def _check_form(self, value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise PydanticCustomError(
                "decimal_format",
                "Input should be a decimal string of the form {pattern}",
                {"pattern": self.pattern},
            )
        if isinstance(value, bool):  # a JSON boolean is no number, whatever Python thinks
            raise PydanticCustomError("decimal_type", "Input should be a number or a string")
        return value

    def __get_pydantic_core_schema__(
        self, source: type[Decimal], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            self._check_form,
            core_schema.no_info_after_validator_function(
                self._to_scale,
                core_schema.decimal_schema(
                    ge=Decimal(0),
                    le=self.maximum,
                    decimal_places=self.decimal_places,
                    allow_inf_nan=False,
                ),
            ),
        )

    def _to_scale(self, value: Decimal) -> Decimal:
        # "9.5" and 9.5 become 9.50, as the column stores them: what a write answers is what a
        # read returns. Exact: the value has no more decimal places than that.
        return value.quantize(Decimal(10) ** -self.decimal_places)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        as_string = {"type": "string", "pattern": self.pattern}
        if handler.mode == "serialization":
            return as_string
        as_number = {
            "type": "number",
            "minimum": 0,
            "maximum": float(self.maximum),
            "multipleOf": float(Decimal(10) ** -self.decimal_places),
        }
        return {"anyOf": [as_number, as_string]}
