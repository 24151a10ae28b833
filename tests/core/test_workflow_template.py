"""Template documents: load (parse, migrate, JSON Schema), validate (every rule names the node and
field), the CLI's `workflow validate` shape, graph helpers, diff and digest."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from stella_core.errors import DefinitionError, NotFoundError
from stella_core.workflows.edit import auto_layout
from stella_core.workflows.model import (
    Edge,
    InputSpec,
    Layout,
    Node,
    Position,
    Problem,
    Retry,
    Template,
)
from stella_core.workflows.schema import template_schema
from stella_core.workflows.steps.registry import StepRegistry, default_registry
from stella_core.workflows.steps.spec import StepTypeSpec
from stella_core.workflows.template import (
    MAX_TEMPLATE_BYTES,
    CycleError,
    TemplateError,
    ancestors,
    canonical_json,
    check,
    dependants,
    dependencies,
    descendants,
    diff,
    digest,
    load_document,
    main_nodes,
    rollback_nodes,
    topological_order,
    validate,
    validation_report,
)

REGISTRY = default_registry()


def good_doc() -> dict[str, Any]:
    """A release pipeline that uses every feature and is valid."""
    return {
        "schema_version": 1,
        "name": "ship-it",
        "version": 4,
        "description": "build, check, approve, deploy",
        "inputs": {
            "replicas": {"type": "integer", "default": 2},
            "ratio": {"type": "number", "required": True},
            "target": {"type": "string", "description": "where to"},
        },
        "nodes": [
            {"id": "build", "type": "script", "name": "Build", "inputs": {"command": ["make"]}},
            {
                "id": "smoke",
                "type": "http-check",
                "inputs": {
                    "url": "https://${{ inputs.target }}/h?d=${{ steps.build.outputs.stdout }}",
                    "expect_status": "${{ steps.build.outputs.exit_code + 200 }}",
                },
                "retry": {"max_attempts": 3, "backoff_initial_ms": 500, "backoff_factor": 1.5},
                "timeout_seconds": 60,
                "on_failure": "continue",
            },
            {
                "id": "approve",
                "type": "approval",
                "inputs": {"approvers": ["release-manager"], "required": 1},
                "condition": "${{ environment.required_approvals > 0 }}",
            },
            {
                "id": "deploy",
                "type": "script",
                "inputs": {
                    "command": ["deploy", "${{ release.components[0].digest }}"],
                    "env": {"REPLICAS": "${{ inputs.replicas }}x"},
                },
                "condition": "steps.smoke.outputs.status == 200 && inputs.ratio < 1.0",
                "on_failure": "rollback",
            },
            {
                "id": "undo",
                "type": "script",
                "rollback": True,
                "inputs": {"command": ["undo", "${{ steps.build.outputs.stdout }}"]},
            },
            {
                "id": "tell",
                "type": "notify",
                "rollback": True,
                "inputs": {"message": "rolled back after ${{ steps.deploy.outputs.exit_code }}"},
            },
        ],
        "edges": [
            {"from": "build", "to": "smoke"},
            {"from": "smoke", "to": "approve"},
            {"from": "approve", "to": "deploy"},
            {"from": "build", "to": "deploy"},
            {"from": "undo", "to": "tell"},
        ],
        "layout": {"positions": {"build": {"x": 0, "y": 0}, "smoke": {"x": 240.5, "y": 0}}},
    }


def problems_of(doc: dict[str, Any]) -> list[Problem]:
    return check(doc, REGISTRY)[1]


def assert_problem(
    problems: list[Problem], node: str | None, field: str | None, fragment: str
) -> None:
    hits = [p for p in problems if p.node == node and p.field == field and fragment in p.message]
    assert hits, f"no problem ({node}, {field}, ~{fragment!r}) in {problems}"


# --- loading and the JSON Schema ------------------------------------------------------------


def test_a_good_template_loads_validates_and_round_trips() -> None:
    template = load_document(json.dumps(good_doc()))
    assert validate(template, REGISTRY) == []
    assert load_document(template.to_document()) == template
    assert load_document(json.dumps(template.to_document()).encode()) == template
    assert template.node("smoke").retry == Retry(
        max_attempts=3, backoff_initial_ms=500, backoff_factor=1.5
    )
    assert template.edges[0] == Edge.model_validate({"from": "build", "to": "smoke"})


def test_the_shipped_schema_describes_the_model() -> None:
    schema = template_schema()
    Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]

    def fields(model: type) -> set[str]:
        return {f.alias or name for name, f in model.model_fields.items()}  # type: ignore[attr-defined]

    assert set(schema["properties"]) == fields(Template)
    assert set(defs["node"]["properties"]) == fields(Node)
    assert set(defs["retry"]["properties"]) == fields(Retry)
    assert set(defs["input"]["properties"]) == fields(InputSpec)
    assert set(defs["edge"]["properties"]) == fields(Edge) == {"from", "to"}
    assert set(defs["layout"]["properties"]) == fields(Layout)
    assert set(defs["layout"]["properties"]["positions"]["additionalProperties"]["properties"]) == (
        fields(Position)
    )
    # whatever the model writes, the schema accepts (defaults included)
    validator = Draft202012Validator(schema)
    minimal = Template(name="x", nodes=(Node(id="a", type="wait"),))
    for template in (load_document(good_doc()), minimal):
        assert list(validator.iter_errors(template.to_document())) == []
    assert list(validator.iter_errors({"name": "x"})) == []


def test_load_does_not_touch_the_callers_dict() -> None:
    doc = good_doc()
    before = copy.deepcopy(doc)
    load_document(doc)
    assert doc == before


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"name": "x",\n "nodes": [}', "not valid JSON at line 2 column 12"),
        ("[]", "a JSON object, not an array"),
        ("42", "not a number"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"name": "x", "name": "y"}', "duplicate key 'name'"),
        ('{"name": "x", "version": NaN}', "NaN is not a JSON number"),
        ('{"name": "x", "version": 1e400}', "not a JSON number"),
        ('{"name": "x", "version": 18014398509481984}', "beyond 2**53"),
        ('{"name": "x", "description": "\\ud800"}', "not valid UTF-8"),
        # What validate accepts, import must store: PostgreSQL text holds no NUL.
        ('{"name": "x", "description": "a\\u0000b"}', "at description contains a NUL"),
        ('{"name": "x", "inputs": {"a\\u0000": {}}}', "key at inputs contains a NUL"),
        ('{"name": "x", "version": ' + "9" * 5000 + "}", "(5000 digits) is beyond 2**53"),
        ("[" * 50_000 + "]" * 50_000, "nested more than 64 levels deep"),
        ('{"name": "x", "inputs": {"a": {"default": ' + "[" * 80 + "]" * 80 + "}}}", "nested"),
        ('{"schema_version": 2, "name": "x"}', "newer than this Stella understands"),
        ('{"schema_version": -1, "name": "x"}', "not a known template version"),
        ('{"schema_version": "1", "name": "x"}', "must be an integer"),
        (b"{" + b" " * (MAX_TEMPLATE_BYTES + 1) + b"}", "at most 2097152"),
        ("{" + " " * (MAX_TEMPLATE_BYTES + 1) + "}", "at most 2097152"),
    ],
)
def test_unloadable_documents_raise_template_errors(raw, fragment) -> None:
    with pytest.raises(TemplateError) as info:
        load_document(raw)
    assert fragment in info.value.message
    assert info.value.problems
    assert isinstance(info.value, DefinitionError)
    assert info.value.exit_code == 2


def test_schema_problems_name_node_and_field() -> None:
    doc = good_doc()
    doc["name"] = "Not A Name"
    doc["extra"] = 1
    doc["nodes"][0]["retry"] = {"max_attempts": 0}
    doc["nodes"][0]["colour"] = "red"
    doc["nodes"][1]["timeout_seconds"] = "soon"
    doc["nodes"][2]["on_failure"] = "explode"
    doc["nodes"].append({"type": "wait"})
    doc["nodes"].append({"id": "Bad-Id", "type": "wait"})
    doc["edges"].append({"from": "build"})
    doc["layout"]["positions"]["build"] = {"x": "left"}
    with pytest.raises(TemplateError) as info:
        load_document(doc)
    problems = info.value.problems
    assert_problem(problems, None, "name", "lowercase")
    assert_problem(problems, None, "extra", "unknown field")
    assert_problem(problems, "build", "retry.max_attempts", "less than the minimum of 1")
    assert_problem(problems, "build", "colour", "unknown field")
    assert_problem(problems, "smoke", "timeout_seconds", "not of type")
    assert_problem(problems, "approve", "on_failure", "is not one of")
    assert_problem(problems, None, "nodes[6].id", "'id' is required")
    assert_problem(problems, "Bad-Id", "id", "node ids are 1-63 lowercase")
    assert_problem(problems, None, "edges[5].to", "'to' is required")
    assert_problem(problems, None, "layout.positions.build.x", "not of type 'number'")
    assert_problem(problems, None, "layout.positions.build.y", "'y' is required")


# --- migrations -----------------------------------------------------------------------------


def test_schema_version_0_migrates_to_1() -> None:
    v0 = {
        "schema_version": 0,
        "name": "old",
        "nodes": [
            {"id": "a", "type": "script", "inputs": {"command": ["x"]}, "retries": 2},
            {"id": "b", "type": "notify", "inputs": {"message": "hi"}, "depends_on": ["a"]},
            {"id": "c", "type": "wait", "inputs": {"seconds": 1}, "depends_on": ["a", "b"]},
        ],
    }
    template = load_document(json.dumps(v0))
    assert template.schema_version == 1
    assert template.node("a").retry.max_attempts == 3
    assert template.node("b").retry.max_attempts == 1
    assert [(e.source, e.target) for e in template.edges] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert validate(template, REGISTRY) == []


def test_bad_version_0_documents_say_where() -> None:
    v0 = {
        "schema_version": 0,
        "name": "old",
        "edges": [],
        "nodes": [
            {"id": "a", "type": "wait", "depends_on": "b", "retries": -1},
            {"id": "b", "type": "wait", "retries": 1, "retry": {"max_attempts": 2}},
        ],
    }
    with pytest.raises(TemplateError) as info:
        load_document(v0)
    problems = info.value.problems
    assert_problem(problems, None, "edges", "depends_on")
    assert_problem(problems, "a", "depends_on", "list of node ids")
    assert_problem(problems, "a", "retries", "0 or more")
    assert_problem(problems, "b", "retries", "not both")


# --- validation rules -----------------------------------------------------------------------


def test_duplicate_and_reserved_node_ids() -> None:
    doc = good_doc()
    doc["nodes"].append({"id": "build", "type": "wait", "inputs": {"seconds": 1}})
    doc["nodes"].append({"id": "in", "type": "wait", "inputs": {"seconds": 1}})
    doc["edges"].append({"from": "deploy", "to": "in"})
    problems = problems_of(doc)
    assert_problem(problems, "build", "id", "duplicate node id 'build' (nodes[0] and nodes[6])")
    assert_problem(problems, "in", "id", "reserved word")


def test_unknown_step_type_still_checks_its_expressions() -> None:
    doc = good_doc()
    doc["nodes"][1]["type"] = "htp-check"
    doc["nodes"][1]["inputs"]["x"] = "${{ steps.nope.outputs.a }}"
    problems = problems_of(doc)
    assert_problem(problems, "smoke", "type", "unknown step type 'htp-check' (known: approval")
    assert_problem(problems, "smoke", "inputs.x", "there is no node 'nope'")


def test_inputs_against_the_step_schema() -> None:
    doc = good_doc()
    nodes = {n["id"]: n for n in doc["nodes"]}
    nodes["build"]["inputs"] = {"cmd": ["make"]}  # missing `command`, unknown `cmd`
    nodes["approve"]["inputs"]["required"] = "one"  # literal of the wrong type
    nodes["undo"]["inputs"]["command"] = ["undo", 3]  # nested literal
    nodes["undo"]["inputs"]["env"] = {"A": 1}
    nodes["smoke"]["inputs"]["expect_status"] = "${{ steps.build.outputs.stdout }}"
    nodes["tell"]["inputs"]["message"] = "${{ 1 + }}"
    problems = problems_of(doc)
    assert_problem(problems, "build", "inputs.command", "required input 'command'")
    assert_problem(problems, "build", "inputs.cmd", "has no input 'cmd' (inputs: command, env)")
    assert_problem(problems, "approve", "inputs.required", "'one' is not of type 'integer'")
    assert_problem(problems, "undo", "inputs.command[1]", "3 is not of type 'string'")
    assert_problem(problems, "undo", "inputs.env.A", "1 is not of type 'string'")
    assert_problem(problems, "smoke", "inputs.expect_status", "expected integer")
    assert_problem(problems, "tell", "inputs.message", "Syntax error")


def test_interpolated_text_is_a_string() -> None:
    doc = good_doc()
    doc["nodes"][2]["inputs"]["required"] = "${{ inputs.replicas }} people"
    assert_problem(
        problems_of(doc), "approve", "inputs.required", "makes a string, but input 'required'"
    )


def test_edges_to_unknown_nodes_self_loops_duplicates() -> None:
    doc = good_doc()
    doc["edges"] += [
        {"from": "ghost", "to": "build"},
        {"from": "deploy", "to": "nowhere"},
        {"from": "smoke", "to": "smoke"},
        {"from": "build", "to": "smoke"},
    ]
    problems = problems_of(doc)
    assert_problem(problems, None, "edges[5].from", "there is no node 'ghost'")
    assert_problem(problems, None, "edges[6].to", "there is no node 'nowhere'")
    assert_problem(problems, "smoke", "edges[7]", "to itself")
    assert_problem(problems, None, "edges[8]", "duplicate edge build → smoke")


def test_cycles_name_their_nodes() -> None:
    doc = good_doc()
    doc["edges"].append({"from": "deploy", "to": "smoke"})
    problems = problems_of(doc)
    assert_problem(problems, "smoke", "edges", "cycle: smoke → approve → deploy → smoke")
    # two separate cycles are both reported
    doc["nodes"] += [
        {"id": "p", "type": "wait", "inputs": {"seconds": 1}},
        {"id": "q", "type": "wait", "inputs": {"seconds": 1}},
    ]
    doc["edges"] += [{"from": "p", "to": "q"}, {"from": "q", "to": "p"}]
    cycles = [p for p in problems_of(doc) if p.message.startswith("cycle")]
    assert len(cycles) == 2
    with pytest.raises(CycleError) as info:
        topological_order(load_document(doc))
    assert set(info.value.cycle) in ({"smoke", "approve", "deploy"}, {"p", "q"})


def test_the_rollback_path_is_separate() -> None:
    doc = good_doc()
    doc["edges"].append({"from": "deploy", "to": "undo"})
    doc["nodes"][4]["on_failure"] = "rollback"
    problems = problems_of(doc)
    assert_problem(problems, None, "edges[5]", "joins main node 'deploy' and rollback node 'undo'")
    assert_problem(problems, "undo", "on_failure", "a rollback node cannot start a rollback")


def test_rollback_on_failure_needs_rollback_nodes() -> None:
    doc = good_doc()
    doc["nodes"] = [n for n in doc["nodes"] if not n.get("rollback")]
    doc["edges"] = [e for e in doc["edges"] if e["from"] != "undo"]
    assert_problem(problems_of(doc), "deploy", "on_failure", "no rollback nodes")


def test_unreachable_nodes() -> None:
    doc = good_doc()
    doc["nodes"].append({"id": "stray", "type": "wait", "inputs": {"seconds": 1}})
    doc["nodes"].append(
        {"id": "lost", "type": "notify", "rollback": True, "inputs": {"message": "m"}}
    )
    problems = problems_of(doc)
    assert_problem(problems, "stray", None, "unreachable")
    assert_problem(problems, "lost", None, "unreachable: no edge leads to or from")
    assert_problem(problems, "lost", None, "rollback path")
    # a single node is a whole template, not an island
    single = {"name": "one", "nodes": [{"id": "a", "type": "wait", "inputs": {"seconds": 1}}]}
    assert problems_of(single) == []


def test_step_references_must_run_before() -> None:
    doc = good_doc()
    nodes = {n["id"]: n for n in doc["nodes"]}
    nodes["smoke"]["inputs"]["url"] = "${{ steps.deploy.outputs.stdout }}"  # runs later
    nodes["approve"]["inputs"]["required"] = "${{ steps.approve.outputs.approved_by.size() }}"
    nodes["build"]["condition"] = "steps.missing.outputs.ok"
    problems = problems_of(doc)
    assert_problem(problems, "smoke", "inputs.url", "'deploy' does not run before 'smoke'")
    assert_problem(problems, "approve", "inputs.required", "cannot read its own outputs")
    assert_problem(problems, "build", "condition", "there is no node 'missing'")


def test_rollback_nodes_read_main_outputs_but_not_later_rollback_nodes() -> None:
    doc = good_doc()
    doc["nodes"][4]["inputs"]["command"] = ["undo", "${{ steps.tell.outputs.message }}"]
    assert_problem(problems_of(doc), "undo", "inputs.command[1]", "'tell' does not run before")


def test_undeclared_outputs_and_wrong_types() -> None:
    doc = good_doc()
    nodes = {n["id"]: n for n in doc["nodes"]}
    nodes["deploy"]["inputs"]["command"] = ["deploy", "${{ steps.build.outputs.digets }}"]
    nodes["deploy"]["condition"] = "steps.smoke.outputs.status == '200'"
    problems = problems_of(doc)
    assert_problem(
        problems,
        "deploy",
        "inputs.command[1]",
        "no field 'digets' in the outputs of step type 'script'",
    )
    assert_problem(problems, "deploy", "condition", "'==' for (int, string)")


def test_conditions_must_be_bool() -> None:
    doc = good_doc()
    doc["nodes"][2]["condition"] = "${{ steps.build.outputs.stdout }}"
    doc["nodes"][3]["condition"] = "a ${{ true }} b"
    problems = problems_of(doc)
    assert_problem(problems, "approve", "condition", "expected boolean, but the expression gives")
    assert_problem(problems, "deploy", "condition", "single expression")


def test_template_inputs_must_be_declared_and_defaults_typed() -> None:
    doc = good_doc()
    doc["nodes"][0]["inputs"]["command"] = ["make", "${{ inputs.flavour }}"]
    doc["inputs"]["replicas"]["default"] = "two"
    problems = problems_of(doc)
    assert_problem(
        problems,
        "build",
        "inputs.command[1]",
        "inputs.flavour is not an input of this template (inputs: replicas, ratio, target)",
    )
    assert_problem(problems, None, "inputs.replicas.default", "not integer")


def test_expression_limits_are_reported_at_save_time() -> None:
    doc = good_doc()
    ten = "[0,1,2,3,4,5,6,7,8,9]"
    doc["nodes"][3]["condition"] = f"{ten}.all(a, {ten}.all(b, {ten}.all(c, true)))"
    doc["nodes"][0]["inputs"]["command"] = ["${{ '" + "x" * 3000 + "' }}"]
    problems = problems_of(doc)
    assert_problem(problems, "deploy", "condition", "nested 3 deep")
    assert_problem(problems, "build", "inputs.command[0]", "at most 2048")


def test_empty_templates_and_stale_positions() -> None:
    problems = problems_of({"name": "empty", "layout": {"positions": {"gone": {"x": 0, "y": 0}}}})
    assert_problem(problems, None, "nodes", "no steps to run")
    assert_problem(problems, None, "layout.positions.gone", "not a node")


def test_plugin_step_types_come_from_the_registry() -> None:
    registry = default_registry()
    registry.register(
        StepTypeSpec(
            name="scan",
            title="Scan",
            description="scans an image",
            input_schema={"type": "object", "properties": {"image": {"type": "string"}}},
            output_schema={
                "type": "object",
                "properties": {"critical": {"type": "integer"}, "image-digest": {"type": "string"}},
            },
        )
    )
    with pytest.raises(DefinitionError, match="registered already"):
        registry.register(registry.get("scan"))  # type: ignore[arg-type]
    doc = {
        "name": "scan",
        "nodes": [
            {"id": "scan", "type": "scan", "inputs": {"image": "x", "free": 1}},
            {
                "id": "gate",
                "type": "fail",
                "inputs": {"message": "${{ steps.scan.outputs['image-digest'] }}"},
                "condition": "steps.scan.outputs.critical > 0",
            },
        ],
        "edges": [{"from": "scan", "to": "gate"}],
    }
    assert check(doc, registry)[1] == []
    assert_problem(check(doc)[1], "scan", "type", "unknown step type 'scan'")
    assert default_registry().get("scan") is None  # fresh registries, no shared state
    assert isinstance(default_registry(), StepRegistry)


# --- the CLI shape --------------------------------------------------------------------------


def test_check_gives_what_workflow_validate_prints() -> None:
    template, problems = check(json.dumps(good_doc()))
    assert template is not None
    assert validation_report(problems) == {"valid": True, "errors": []}

    doc = good_doc()
    doc["edges"].append({"from": "deploy", "to": "ghost"})
    template, problems = check(json.dumps(doc))
    report = json.loads(json.dumps(validation_report(problems)))
    assert template is not None
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "node": None,
            "field": "edges[5].to",
            "message": "edge deploy → ghost: there is no node 'ghost'",
        }
    ]

    template, problems = check("{not json")
    assert template is None
    report = validation_report(problems)
    assert report["valid"] is False
    assert set(report["errors"][0]) == {"node", "field", "message"}
    assert "line 1 column 2" in report["errors"][0]["message"]


# --- graph helpers --------------------------------------------------------------------------


def test_graph_helpers() -> None:
    t = load_document(good_doc())
    order = topological_order(t)
    assert order == ["build", "smoke", "approve", "deploy", "undo", "tell"]
    assert ancestors(t, "deploy") == {"build", "smoke", "approve"}
    assert descendants(t, "build") == {"smoke", "approve", "deploy"}
    assert dependencies(t, "deploy") == {"approve", "build"}
    assert dependants(t, "build") == {"smoke", "deploy"}
    assert [n.id for n in main_nodes(t)] == ["build", "smoke", "approve", "deploy"]
    assert [n.id for n in rollback_nodes(t)] == ["undo", "tell"]
    with pytest.raises(NotFoundError):
        ancestors(t, "nope")


# --- diff and digest ------------------------------------------------------------------------


def test_diff_names_what_changed() -> None:
    a = load_document(good_doc())
    doc = good_doc()
    doc["version"] = 5
    doc["description"] = "now with scans"
    doc["inputs"]["replicas"]["default"] = 3
    doc["inputs"]["zone"] = {"type": "string"}
    del doc["inputs"]["target"]
    doc["nodes"][1]["inputs"]["url"] = "https://example/health"
    doc["nodes"][1]["retry"]["max_attempts"] = 5
    doc["nodes"][0]["name"] = "Compile"
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] != "tell"]
    doc["nodes"].append({"id": "scan", "type": "wait", "inputs": {"seconds": 1}})
    doc["edges"] = [e for e in doc["edges"] if e["from"] != "undo"]
    doc["edges"].append({"from": "build", "to": "scan"})
    doc["layout"]["positions"]["build"] = {"x": 10, "y": 0}
    b = load_document(doc)
    d = diff(a, b)
    assert [(c.field, c.old, c.new) for c in d.changes] == [
        ("description", "build, check, approve, deploy", "now with scans")
    ]
    assert d.inputs_added == ("zone",)
    assert d.inputs_removed == ("target",)
    assert [c.field for c in d.inputs_changed] == ["replicas"]
    assert d.nodes_added == ("scan",)
    assert d.nodes_removed == ("tell",)
    changed = {c.id: {f.field: (f.old, f.new) for f in c.changes} for c in d.nodes_changed}
    assert changed["build"] == {"name": ("Build", "Compile")}
    assert changed["smoke"]["retry.max_attempts"] == (3, 5)
    assert changed["smoke"]["inputs.url"][1] == "https://example/health"
    assert d.edges_added == (("build", "scan"),)
    assert d.edges_removed == (("undo", "tell"),)
    assert d.nodes_moved == ("build",)
    assert d.layout_changed
    assert not d.is_empty
    assert diff(a, a).is_empty
    assert diff(a, load_document(a.to_document())).is_empty


def test_digest_detects_unchanged_saves() -> None:
    a = load_document(good_doc())
    renumbered = a.model_copy(update={"version": 9})
    assert digest(a) == digest(renumbered)  # the store assigns version numbers
    assert digest(a).startswith("sha256:")
    assert len(digest(a)) == 71
    moved = auto_layout(a)
    assert digest(a) != digest(moved)
    assert digest(a, layout=False) == digest(moved, layout=False)
    canon = canonical_json(a, layout=False)
    assert b'"layout"' not in canon
    assert json.loads(canon) == {k: v for k, v in a.to_document().items() if k != "layout"}
    assert canon.index(b'"description"') < canon.index(b'"edges"')  # sorted keys (RFC 8785)


# --- scale and properties -------------------------------------------------------------------


def layered(layers: int, width: int) -> Template:
    nodes = []
    edges = []
    for layer in range(layers):
        for i in range(width):
            nid = f"n{layer}_{i}"
            message = (
                "start" if layer == 0 else f"${{{{ steps.n{layer - 1}_{i}.outputs.message }}}}"
            )
            nodes.append(Node(id=nid, type="notify", inputs={"message": message}))
            if layer:
                edges.append(Edge.model_validate({"from": f"n{layer - 1}_{i}", "to": nid}))
                j = (i * 7 + layer) % width
                if j != i:
                    edges.append(Edge.model_validate({"from": f"n{layer - 1}_{j}", "to": nid}))
    return Template(name="big", nodes=tuple(nodes), edges=tuple(edges))


def test_a_thousand_node_template_validates_and_lays_out() -> None:
    t = layered(20, 50)
    assert validate(t, REGISTRY) == []
    laid = auto_layout(t)
    assert len(laid.layout.positions) == 1000
    assert load_document(laid.to_document()) == laid
    order = topological_order(t)
    rank = {nid: i for i, nid in enumerate(order)}
    assert all(rank[e.source] < rank[e.target] for e in t.edges)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=12,
)
KEYS = [
    "schema_version",
    "name",
    "version",
    "inputs",
    "nodes",
    "edges",
    "layout",
    "id",
    "type",
    "from",
    "to",
    "retry",
    "retries",
    "depends_on",
    "condition",
    "rollback",
    "on_failure",
]
doc_like = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6) | st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([0, 1, 2, -1, "1", None]),
        "name": st.sampled_from(["ok", "Bad", 3]),
        "nodes": st.lists(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5), max_size=4),
        "edges": st.lists(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=3), max_size=3),
    }
)
PROPS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), doc_like.map(json.dumps)))
def test_random_input_only_raises_template_errors(raw: bytes | str) -> None:
    error: TemplateError | None = None
    try:
        load_document(raw)
    except TemplateError as exc:
        error = exc
    assert error is None or error.problems
    template, problems = check(raw, REGISTRY)
    assert template is not None or problems
    assert all(isinstance(p, Problem) for p in problems)


@PROPS
@given(doc_like)
def test_random_documents_only_raise_template_errors(doc: dict[str, Any]) -> None:
    try:
        template = load_document(doc)
    except TemplateError:
        return
    validate(template, REGISTRY)
    digest(template)


EXPR_BITS = [
    "steps.a.outputs.stdout",
    "steps.b.outputs.x",
    "steps.zz.outputs",
    "steps['a']",
    "steps",
    "inputs.n",
    "inputs.missing",
    "release.components",
    "environment.order",
    " + ",
    " == ",
    "1",
    "'s'",
    "true",
    "(",
    ")",
    "[",
    "]",
    ".map(x, x)",
    ".exists(c, c)",
    "}}",
    "${{",
    "'",
    "\\",
    " ",
    "null",
    "size(",
    "b'x'",
    ".in",
]
expr_text = st.lists(st.sampled_from(EXPR_BITS), max_size=8).map("".join)
input_value = st.one_of(
    JSON,
    expr_text.map(lambda e: "${{ " + e + " }}"),
    expr_text.map(lambda e: "x ${{ " + e + " }} y"),
    st.lists(expr_text.map(lambda e: "${{ " + e + " }}"), max_size=2),
)
node_ids = st.sampled_from(["a", "b", "c", "d", "in", "a"])
nodes = st.lists(
    st.builds(
        Node,
        id=node_ids,
        type=st.sampled_from(["script", "notify", "wait", "approval", "http-check", "fail", "x"]),
        inputs=st.dictionaries(
            st.sampled_from(["command", "message", "seconds", "url", "required", "zz"]),
            input_value,
            max_size=3,
        ),
        condition=st.none() | expr_text,
        rollback=st.booleans(),
        on_failure=st.sampled_from(["fail", "continue", "rollback"]),
    ),
    max_size=6,
)


@PROPS
@given(
    nodes,
    st.lists(st.tuples(node_ids | st.just("ghost"), node_ids), max_size=8),
)
def test_validate_reports_and_never_raises(node_list: list[Node], pairs) -> None:
    template = Template(
        name="prop",
        inputs={"n": InputSpec(type="integer")},
        nodes=tuple(node_list),
        edges=tuple(Edge.model_validate({"from": a, "to": b}) for a, b in pairs),
    )
    problems = validate(template, REGISTRY)
    assert all(isinstance(p, Problem) and p.message for p in problems)
    auto_layout(template)
    cyclic = any(p.message.startswith(("cycle", "edge from")) for p in problems)
    if cyclic:
        with pytest.raises(CycleError) as info:
            topological_order(template)
        assert info.value.cycle
    else:
        assert len(topological_order(template)) == len({n.id for n in node_list})
