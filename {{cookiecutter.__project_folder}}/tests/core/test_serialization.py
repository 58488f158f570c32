"""JSON through orjson, and through the standard library where orjson refuses."""

import math

from app.core import serialization


def test_a_document_is_written_compact_and_read_back() -> None:
    document = {"task": "orders.process", "labels": {"order_id": "1"}, "tries": [1, 2.5, None]}

    text = serialization.dumps(document)

    assert text == '{"task":"orders.process","labels":{"order_id":"1"},"tries":[1,2.5,null]}'
    assert serialization.dumpb(document) == text.encode()
    assert serialization.loads(text) == document
    assert serialization.loads(text.encode()) == document


def test_what_orjson_refuses_goes_through_the_standard_library() -> None:
    beyond_64_bits = {"n": 2**70, 1: "a key that is no string"}

    assert (
        serialization.dumps(beyond_64_bits)
        == '{"n": 1180591620717411303424, "1": "a key that is no string"}'
    )
    assert serialization.dumpb(beyond_64_bits) == serialization.dumps(beyond_64_bits).encode()
    assert serialization.loads(serialization.dumps(beyond_64_bits)) == {
        "n": 2**70,
        "1": "a key that is no string",
    }
    not_a_number = serialization.loads('{"x": NaN}')
    assert isinstance(not_a_number, dict)
    assert math.isnan(not_a_number["x"])
