"""The targetCondition parser: tags, deviceId, AND/OR/NOT, parentheses, errors."""
from __future__ import annotations

import pytest

from helpers.localcloud.hub.condition import ConditionError, device_document, matches, parse_condition


def doc(device_id="cam-1", **tags):
    return device_document(device_id, tags, {}, {"edgeAgent": {"runtime": "process"}})


@pytest.mark.parametrize("cond,expected", [
    ("tags.env='prod'", True),
    ("tags.env = \"prod\"", True),
    ("tags.env='dev'", False),
    ("tags.env!='dev'", True),
    ("tags.missing='x'", False),
    ("tags.missing!='x'", False),
    ("tags.env='prod' AND tags.site='lab'", True),
    ("tags.env='prod' and tags.site='home'", False),
    ("tags.env='dev' OR tags.site='lab'", True),
    ("tags.env='dev' OR (tags.site='lab' AND deviceId='cam-1')", True),
    ("(tags.env='dev' OR tags.site='lab') AND deviceId='cam-2'", False),
    ("NOT tags.env='dev'", True),
    ("deviceId='cam-1'", True),
    ("deviceId IN ['cam-2', 'cam-1']", True),
    ("tags.n >= 3", True),
    ("tags.n < 3", False),
    ("tags.on = true", True),
    ("tags.on = 'true'", False),
    ("tags.nested.a = 'b'", True),
    ("properties.reported.edgeAgent.runtime='process'", True),
    ("capabilities.iotEdge = true", True),
    ("*", True),
])
def test_conditions(cond, expected):
    d = doc(env="prod", site="lab", n=3, on=True, nested={"a": "b"})
    assert matches(cond, d) is expected


def test_precedence_and_binds_tighter_than_or():
    d = doc(a="1", b="0", c="1")
    assert matches("tags.a='1' OR tags.b='1' AND tags.c='0'", d)  # a OR (b AND c)
    assert not matches("(tags.a='1' OR tags.b='1') AND tags.c='0'", d)


def test_quotes_inside_strings():
    assert matches("tags.name='o''brien'", doc(name="o'brien"))


@pytest.mark.parametrize("bad", ["", "tags.env=", "tags.env='x' AND", "(tags.env='x'", "tags.env 'x'", "tags.env='x')",
                                 "= 'x'", "tags.env='x' tags.y='z'", "tags.env=#"])
def test_errors_name_the_position(bad):
    with pytest.raises(ConditionError, match="targetCondition"):
        parse_condition(bad)
