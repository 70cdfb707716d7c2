"""Native unit tests of the helper's schema derivation and dispatch (no component, no host).

Run by `make test`: python3 plugins/python-sdk/test_cordon.py
"""

import enum
import json
import unittest
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import cordon
from cordon import Context, ToolError, tool

CX = Context(principal="tester", call_id="call-1")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: Annotated[float, "Horizontal."]
    y: float = field(default=0.0, metadata={"description": "Vertical."})


@dataclass
class Area:
    square_units: float = field(metadata={"description": "The area."})


@tool(description="Takes every kind of parameter the helper understands, for the tests.")
def kinds(
    text: Annotated[str, "Some text."],
    count: Annotated[int, {"description": "How many.", "minimum": 0}],
    mode: Annotated[Literal["fast", "slow"], "Speed."],
    color: Annotated[Color, "A color."],
    points: Annotated[list[Point], "Some points."],
    ratio: Annotated[Optional[float], "An optional ratio."] = None,
    flag: Annotated[bool, "A flag."] = True,
    cx: Context = None,
) -> dict:
    assert isinstance(points[0], Point) and isinstance(color, Color) and cx is CX
    return {"text": text, "count": count, "mode": mode, "color": color, "points": points, "ratio": ratio, "flag": flag}


@tool(name="area", description="Computes the area of a rectangle from its two corners.", read_only=True)
def rectangle(corner: Point) -> Area:
    if corner.x < 0:
        raise ToolError("negative", "x must not be negative", retryable=False)
    return Area(square_units=corner.x * corner.y)


@tool(description="Says hello, as plain text.")
def hello(name: Annotated[str, "Who."]) -> str:
    return f"hello {name}"


def describe(name):
    return next(d for d in cordon.descriptors() if d["name"] == name)


class Schemas(unittest.TestCase):
    def test_parameters_become_a_closed_object(self):
        schema = describe("kinds")["input_schema"]
        self.assertEqual(schema["type"], "object")
        self.assertIs(schema["additionalProperties"], False)
        self.assertEqual(schema["required"], ["text", "count", "mode", "color", "points"])
        props = schema["properties"]
        self.assertNotIn("cx", props)
        self.assertEqual(props["text"], {"type": "string", "description": "Some text."})
        self.assertEqual(props["count"], {"type": "integer", "description": "How many.", "minimum": 0})
        self.assertEqual(props["mode"], {"enum": ["fast", "slow"], "type": "string", "description": "Speed."})
        self.assertEqual(props["color"]["enum"], ["red", "blue"])
        self.assertEqual(props["ratio"], {"type": "number", "description": "An optional ratio."})
        self.assertEqual(props["flag"], {"type": "boolean", "description": "A flag.", "default": True})
        item = props["points"]["items"]
        self.assertEqual(item["required"], ["x"])
        self.assertEqual(item["properties"]["y"], {"type": "number", "description": "Vertical.", "default": 0.0})
        self.assertIs(item["additionalProperties"], False)

    def test_a_single_dataclass_parameter_is_the_whole_input(self):
        d = describe("area")
        self.assertEqual(d["input_schema"]["required"], ["x"])
        self.assertEqual(d["output_schema"]["properties"]["square_units"]["description"], "The area.")
        self.assertEqual(d["annotations"]["read_only"], True)
        self.assertIsNone(d["annotations"]["destructive"])
        self.assertIsNone(describe("hello")["output_schema"])


class Dispatch(unittest.TestCase):
    def test_arguments_are_converted_and_results_serialized(self):
        args = {"text": "t", "count": 2, "mode": "fast", "color": "blue", "points": [{"x": 1}]}
        text, structured = cordon.run("kinds", json.dumps(args), CX)
        self.assertEqual(text, structured)
        self.assertEqual(
            json.loads(structured),
            {"text": "t", "count": 2, "mode": "fast", "color": "blue", "points": [{"x": 1.0, "y": 0.0}],
             "ratio": None, "flag": True},
        )

    def test_dataclass_in_and_out(self):
        self.assertEqual(cordon.run("area", '{"x": 2, "y": 3}', CX), ('{"square_units":6.0}',) * 2)

    def test_text_results_have_no_structured_content(self):
        self.assertEqual(cordon.run("hello", '{"name": "ada"}', CX), ("hello ada", None))

    def test_typed_errors_pass_through(self):
        with self.assertRaises(ToolError) as caught:
            cordon.run("area", '{"x": -1}', CX)
        self.assertEqual((caught.exception.kind, caught.exception.retryable), ("negative", False))

    def test_unknown_tools_and_bad_arguments(self):
        with self.assertRaises(ToolError) as caught:
            cordon.run("nope", "{}", CX)
        self.assertEqual(caught.exception.kind, "unknown_tool")
        with self.assertRaises(ToolError) as caught:
            cordon.run("area", '{"z": 1}', CX)
        self.assertEqual(caught.exception.kind, "invalid_arguments")

    def test_duplicate_names_are_refused(self):
        with self.assertRaises(ValueError):
            tool(description="Another tool named hello, which must be refused.")(hello)


if __name__ == "__main__":
    unittest.main()
