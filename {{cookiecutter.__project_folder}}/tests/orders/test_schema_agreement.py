"""The OpenAPI schema and the validation agree: a value is accepted exactly when the published
schema admits it (what a schema fuzzer checks). Edge values are built from the schema itself."""

import re
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from tests.orders.factories import make_order

JsonSchema = dict[str, Any]  # Any: JSON values of every kind

ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "9.50"}],
}


def admits(schema: JsonSchema, value: object) -> bool:
    """Whether ``value`` is valid against ``schema`` (the keywords this API's schema uses)."""
    if "anyOf" in schema:
        return any(admits(option, value) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "null":
        return value is None
    if kind == "string":
        return (
            isinstance(value, str)
            and len(value) >= schema.get("minLength", 0)
            and len(value) <= schema.get("maxLength", len(value))
            # ECMA-262 semantics: the pattern matches anywhere unless anchored; \d is ASCII.
            and (
                "pattern" not in schema or re.search(schema["pattern"], value, re.ASCII) is not None
            )
            # format: email (RFC 5321) also bounds the local part, which a pattern cannot count.
            and (schema.get("format") != "email" or len(value.rpartition("@")[0]) <= 64)
        )
    if kind in {"number", "integer"}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind == "integer" and not float(value).is_integer():
            return False
        number = Decimal(str(value))
        return (
            ("minimum" not in schema or number >= Decimal(str(schema["minimum"])))
            and ("maximum" not in schema or number <= Decimal(str(schema["maximum"])))
            and ("multipleOf" not in schema or number % Decimal(str(schema["multipleOf"])) == 0)
        )
    raise AssertionError(f"unexpected schema {schema}")


def option(schema: JsonSchema, kind: str) -> JsonSchema:
    """The ``kind`` branch of a schema (the schema itself when it has no branches)."""
    options = schema.get("anyOf", [schema])
    return next(branch for branch in options if branch.get("type") == kind)


@pytest.fixture
async def openapi(client: AsyncClient) -> JsonSchema:
    schema: JsonSchema = (await client.get("/openapi.json")).json()
    return schema


def component(openapi: JsonSchema, name: str, field: str) -> JsonSchema:
    schema: JsonSchema = openapi["components"]["schemas"][name]["properties"][field]
    return schema


def query_parameter(openapi: JsonSchema, name: str) -> JsonSchema:
    parameters = openapi["paths"]["/api/v1/orders"]["get"]["parameters"]
    schema: JsonSchema = next(p["schema"] for p in parameters if p["name"] == name)
    return schema


def decimal_edges(schema: JsonSchema) -> list[object]:
    """Values at and just beyond the edges of a decimal field (string pattern, number bounds)."""
    pattern = option(schema, "string")["pattern"]
    form = re.fullmatch(r"\^\[0-9\]\{1,(\d+)\}\(\\\.\[0-9\]\{1,(\d+)\}\)\?\$", pattern)
    assert form, pattern
    whole, places = int(form[1]), int(form[2])
    number = option(schema, "number")
    maximum, step = number["maximum"], number["multipleOf"]
    return [
        "0",
        "9" * whole,
        "9" * whole + "." + "9" * places,
        "0." + "0" * places,
        "0" * whole + ".5",
        "1" + "0" * whole,
        "0." + "0" * (places + 1),
        "",
        ".5",
        "5.",
        "+1",
        "-1",
        "1e2",
        " 1",
        "1 ",
        "NaN",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit to Python, not to the schema's [0-9]
        0,
        maximum,
        step,
        1,
        maximum + 1,
        -step,
        step / 10,
        True,
    ]


async def create(client: AsyncClient, order: dict[str, Any]) -> int:
    status: int = (await client.post("/api/v1/orders", json=order)).status_code
    assert status in {201, 422}, status
    return status


async def test_unit_price_is_accepted_exactly_when_the_schema_admits_it(
    client: AsyncClient, openapi: JsonSchema
) -> None:
    schema = component(openapi, "OrderItemIn", "unit_price")

    for price in decimal_edges(schema):
        order = ORDER | {"items": [{"sku": "A", "quantity": 1, "unit_price": price}]}
        assert (await create(client, order) == 201) == admits(schema, price), repr(price)


async def test_quantity_and_sku_are_accepted_exactly_when_the_schema_admits_them(
    client: AsyncClient, openapi: JsonSchema
) -> None:
    quantity = component(openapi, "OrderItemIn", "quantity")
    sku = component(openapi, "OrderItemIn", "sku")
    alphabet = re.fullmatch(r"\^\[([^\]]+)\]\+\$", sku["pattern"])
    assert alphabet, sku["pattern"]
    characters = "".join(c for c in map(chr, range(32, 127)) if re.fullmatch(f"[{alphabet[1]}]", c))
    longest, shortest = sku["maxLength"], sku["minLength"]
    skus = [
        characters[:shortest],
        (characters * longest)[:longest],
        (characters * longest)[: longest + 1],
        "",
        "A B",
        "A/B",
        "\u00e9",
    ]
    for value in skus:
        order = ORDER | {"items": [{"sku": value, "quantity": 1, "unit_price": "1"}]}
        assert (await create(client, order) == 201) == admits(sku, value), repr(value)
    low, high = quantity["minimum"], quantity["maximum"]
    for amount in [low, high, low - 1, high + 1, 1.5, int(low)]:
        order = ORDER | {"items": [{"sku": "A", "quantity": amount, "unit_price": "0"}]}
        assert (await create(client, order) == 201) == admits(quantity, amount), repr(amount)


EMAILS = [
    "a@b.test",  # special-use domains are addresses all the same
    "x@localhost.localdomain",
    "user@example.invalid",
    "Ada.Lovelace+orders@Example.COM",
    "!#$%&'*+/=?^_`{|}~-@example.com",
    "a@b-c.d9",
    "x@localhost",  # the schema asks for a dot in the domain
    "a@b",
    "a..b@example.com",
    ".a@example.com",
    "a@-b.com",
    "a@b-.com",
    '"quoted"@example.com',
    "a@[127.0.0.1]",
    "\u00e9@example.com",
    "a b@example.com",
    "",
]


async def test_customer_email_is_accepted_exactly_when_the_schema_admits_it(
    client: AsyncClient, openapi: JsonSchema
) -> None:
    schema = component(openapi, "OrderCreate", "customer_email")
    longest = schema["maxLength"]
    domain = ".".join(["a" * 63] * 3) + ".com"  # 195 characters
    at_most = "b" * (longest - len(domain) - 1) + "@" + domain
    too_long = "b" + at_most

    longest_local = "c" * 64 + "@example.com"
    for email in [*EMAILS, at_most, too_long, longest_local, "c" + longest_local]:
        order = ORDER | {"customer_email": email}
        assert (await create(client, order) == 201) == admits(schema, email), email


async def test_the_domain_of_an_email_is_stored_in_lower_case(client: AsyncClient) -> None:
    order = ORDER | {"customer_email": "Ada.Lovelace@Example.COM"}

    response = await client.post("/api/v1/orders", json=order)

    assert response.json()["customer_email"] == "Ada.Lovelace@example.com"


async def test_list_filters_are_accepted_exactly_when_the_schema_admits_them(
    client: AsyncClient, openapi: JsonSchema
) -> None:
    email = option(query_parameter(openapi, "customer_email"), "string")
    limit = query_parameter(openapi, "limit")
    for value in EMAILS:
        response = await client.get("/api/v1/orders", params={"customer_email": value})
        assert (response.status_code == 200) == admits(email, value), value
    for number in [limit["minimum"], limit["maximum"], limit["minimum"] - 1, limit["maximum"] + 1]:
        response = await client.get("/api/v1/orders", params={"limit": number})
        assert (response.status_code == 200) == admits(limit, number), number


async def test_a_cursor_is_accepted_exactly_when_the_schema_admits_it(
    client: AsyncClient, openapi: JsonSchema
) -> None:
    schema = option(query_parameter(openapi, "cursor"), "string")
    well_formed = [
        "0-" + "0" * 32,
        "9" * 17 + "-" + "f" * 32,
        "1795773600123456-0b6f4c9e2a554d5e9d1a3f1f2a7b8c9d",  # issued by no one
    ]
    malformed = ["", "garbage", "9" * 18 + "-" + "f" * 32, "1-" + "F" * 32, "1-" + "0" * 31]

    for cursor in well_formed:
        assert admits(schema, cursor), cursor
        response = await client.get("/api/v1/orders", params={"cursor": cursor})
        assert response.status_code == 200, cursor
    for cursor in malformed:
        assert not admits(schema, cursor), cursor
        response = await client.get("/api/v1/orders", params={"cursor": cursor})
        assert response.status_code == 422, cursor
        assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_the_cursors_the_api_issues_fit_the_schema(
    client: AsyncClient, openapi: JsonSchema, session: AsyncSession
) -> None:
    schema = option(query_parameter(openapi, "cursor"), "string")
    await make_order(session)
    await make_order(session)

    page = (await client.get("/api/v1/orders", params={"limit": 1})).json()

    assert admits(schema, page["next_cursor"])
    response = await client.get("/api/v1/orders", params={"cursor": page["next_cursor"]})
    assert response.status_code == 200
