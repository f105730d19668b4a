"""metadata_json nests [ and { at most 64 levels deep (docs/format.md, issue 14): a file that
nests deeper is refused at load with a FormatError naming the limit, so `Model.metadata`
(Python's json recurses once per level) can never raise RecursionError. The engine's
loader and weights_tools.qbw's validator apply the same rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import qbinfer
from weights_tools.qbw import MAX_METADATA_DEPTH, QbwFormatError, parse_qbw, read_qbw, serialize_qbw

DIGITS = Path(qbinfer.__file__).parent / "models" / "digits_qbnet.qbw"
GRAPH = read_qbw(DIGITS)
MAX_STRING = 65535


def with_metadata(text: str) -> bytes:
    """The shipped model with `text` as its metadata_json, written without validation (the
    writer would refuse what the loader must refuse)."""
    graph = copy.copy(GRAPH)
    graph.metadata_json = text
    return serialize_qbw(graph, validate=False)


def nested_objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_limit_is_64():
    assert MAX_METADATA_DEPTH == 64


@pytest.mark.parametrize("make", [nested_objects, nested_lists])
def test_64_levels_load(make):
    text = make(64)
    m = qbinfer.load(with_metadata(text), threads=1)
    assert m._core.metadata_json == text
    want = json.loads(text)
    assert m.metadata == (want if isinstance(want, dict) else {"raw": text})
    parse_qbw(with_metadata(text))  # the Python validator accepts it too


def refusal(blob: bytes) -> str:
    with pytest.raises(qbinfer.FormatError) as engine:
        qbinfer.load(blob, threads=1)
    with pytest.raises(QbwFormatError) as tools:
        parse_qbw(blob)
    for message in (str(engine.value), str(tools.value)):
        assert "metadata_json nests [ and { deeper than the limit of 64 levels" in message
    return str(engine.value)


@pytest.mark.parametrize("make", [nested_objects, nested_lists])
def test_65_levels_are_refused(make):
    message = refusal(with_metadata(make(65)))
    # the first bracket past the limit is the 65th: byte 64 of "[[[...", 6 * 64 of '{"a": ...'
    at = 64 if make is nested_lists else 6 * 64
    assert f"level 65 opens at byte {at} of the metadata" in message


def test_a_string_of_brackets_as_long_as_a_string_may_be():
    # 65535 unclosed '[' (the longest string the format allows): json.loads would recurse
    # past Python's limit; load refuses it first, with no RecursionError anywhere
    message = refusal(with_metadata("[" * MAX_STRING))
    assert message.startswith("<bytes>: ")


def test_mixed_and_unbalanced_nesting():
    # closing brackets never make the depth negative, so "]]]" cannot buy extra levels
    refusal(with_metadata("]" * 100 + "[{" * 32 + "["))
    qbinfer.load(with_metadata("]" * 100 + "[{" * 32), threads=1)
    # depth falls back when a level closes: 64 open, close one, open one again is still 64
    qbinfer.load(with_metadata("[" * 64 + "]" + "{" + "}" * 64), threads=1)


def test_brackets_inside_strings_do_not_count():
    # 2000 brackets and an escaped quote (\\") inside one JSON string: no nesting at all
    text = json.dumps({"note": "[" * 1000 + '\\" {{{' + "{" * 1000})
    m = qbinfer.load(with_metadata(text), threads=1)
    assert m.metadata == json.loads(text)
    parse_qbw(with_metadata(text))
    # an escaped quote does not end the string; the bracket after the real end does count
    deep = '"\\"' + "[" * 70 + '"' + nested_lists(64)
    qbinfer.load(with_metadata(deep), threads=1)
    refusal(with_metadata('"\\"' + "[" * 70 + '"' + nested_lists(65)))


def test_the_writer_refuses_deep_metadata(tmp_path):
    graph = copy.copy(GRAPH)
    graph.metadata_json = nested_lists(65)
    with pytest.raises(QbwFormatError, match="deeper than the limit of 64"):
        serialize_qbw(graph)
