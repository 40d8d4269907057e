"""Exports: JSON Lines and Mermaid/DOT diagrams with visit counts."""

from __future__ import annotations

import json

import pytest

import backends
import tracer
from aminspect import export
from tracer import ManualMachine, StateSpec, TransitionSpec

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def history():
    machine = ManualMachine(
        [
            StateSpec("A", initial=True),
            StateSpec("B"),
            StateSpec("B.x", "B", initial=True),
            StateSpec("B.y", "B"),
            StateSpec("C", final=True),
        ],
        initial=["A"],
        transitions=[
            TransitionSpec("A", "go", "B"),
            TransitionSpec("B", "go", "A"),
            TransitionSpec("B", "go", "A"),  # a duplicate declaration: one edge (GEN-01)
            TransitionSpec("B.x", "flip", "B.y"),
            TransitionSpec("B", "end", "C"),
            TransitionSpec("C", "never", "A"),
        ],
    )
    backend = backends.open("memory://")
    handle = tracer.attach(machine, sink=backend, name="m")
    machine.event("go", ["A"], ["B", "B.x"])
    machine.event("go", ["B", "B.x"], ["A"])
    machine.event("go", ["A"], ["B", "B.x"])
    machine.event("flip", ["B.x"], ["B.y"], args={"n": 1})
    machine.event("end", ["B", "B.y"], ["C"])
    machine.set("A")  # a manual write: an observed, undeclared edge C -> A
    machine.event("go", [], [], accepted=False, error=("MachineError", "no"))
    handle.flush(10)
    handle.detach()
    yield backend
    backend.close()


def test_visit_counts(history):
    v = export.visits(history, "m")
    assert v.states == {"A": 3, "B": 2, "B.x": 2, "B.y": 1, "C": 1}
    counts = {(t.source, t.event, t.dest): n for t, n in v.transitions.items()}
    assert counts == {
        ("A", "go", "B"): 2,
        ("B", "go", "A"): 1,
        ("B.x", "flip", "B.y"): 1,
        ("B", "end", "C"): 1,
    }
    assert dict(v.observed) == {("C", "=A", "A"): 1}
    assert dict(v.initial) == {"A": 1}


def test_mermaid(history):
    text = export.to_mermaid(export.visits(history, "m"))
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert '    state "A (3)" as s0' in lines
    assert "    [*] --> s0" in lines  # the initial state
    assert "    s4 --> [*]" in lines  # the final state
    assert "    state s1 {" in lines and '        state "B.y (1)" as s3' in lines
    assert "    s0 --> s1 : go (2)" in lines
    assert "    s1 --> s0 : go (1)" in lines and text.count("s1 --> s0 : go") == 1
    assert "    s2 --> s3 : flip (1)" in lines
    assert "    s4 --> s0 : never (0)" in lines  # declared, never taken
    assert "    s4 --> s0 : =A (1) (observed)" in lines


def test_dot(history):
    text = export.to_dot(export.visits(history, "m"))
    assert text.startswith('digraph "m" {')
    assert '    s0 [label="A\\n(3)"];' in text
    assert "subgraph cluster_s1 {" in text
    assert '    s0 -> s1 [label="go (2)"];' in text
    assert '    s4 -> s0 [label="=A (1)", style=dashed];' in text
    assert "    __start -> s0;" in text
    assert text.rstrip().endswith("}")


def test_jsonl_has_every_field_with_state_names(history):
    lines = [json.loads(line) for line in export.jsonl_lines(history)]
    assert lines[0]["type"] == "machine" and lines[0]["id"] == "m"
    assert lines[0]["schema"]["states"][2] == ["B.x", "B", True, False, False]
    records = lines[1:]
    assert [r["seq"] for r in records] == list(range(8))
    flip = records[4]
    assert flip["name"] == "flip" and flip["exited"] == ["B.x"] and flip["entered"] == ["B.y"]
    assert flip["args"] == {"n": 1} and flip["id"] == "m/0/4"
    assert records[-1]["accepted"] is False and records[-1]["error"] == ["MachineError", "no"]


def test_declared_for_prefers_the_innermost_source():
    schema = tracer.Schema(
        (StateSpec("P"), StateSpec("P.a", "P", initial=True), StateSpec("Q")),
        (TransitionSpec("P", "e", "Q"), TransitionSpec("P.a", "e", "Q")),
    )
    fits = export.declared_for(schema, "e", frozenset({0, 1}), [2], frozenset({2}))
    assert [t.source for t in fits] == ["P.a", "P"]
    assert export.declared_for(schema, "e", frozenset({2}), [0], frozenset({0})) == []
