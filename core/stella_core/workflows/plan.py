"""What the engine needs of one (immutable) template version, computed once: its graph in both
directions, a topological order and each node's part of the idempotency key."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from stella_core.errors import StellaError
from stella_core.workflows.model import Node, Template
from stella_core.workflows.store import WorkflowStore


@dataclass(frozen=True)
class Plan:
    """What the engine needs of one (immutable) template version, computed once."""

    template: Template
    nodes: Mapping[str, Node]
    deps: Mapping[str, tuple[str, ...]]
    dependants: Mapping[str, tuple[str, ...]]
    has_expressions: Mapping[str, bool]
    key_part: Mapping[str, str]
    order: tuple[str, ...]  # topological

    @classmethod
    def of(cls, template: Template) -> Plan:
        nodes = {n.id: n for n in template.nodes}
        deps: dict[str, list[str]] = {n: [] for n in nodes}
        dependants: dict[str, list[str]] = {n: [] for n in nodes}
        for edge in template.edges:
            a, b = nodes.get(edge.source), nodes.get(edge.target)
            # The rollback path has its own edges; edges across the two paths order nothing.
            if a is None or b is None or a.rollback != b.rollback:
                continue
            if edge.source not in deps[edge.target]:
                deps[edge.target].append(edge.source)
                dependants[edge.source].append(edge.target)
        order: list[str] = []
        remaining = {n: len(d) for n, d in deps.items()}
        queue = [n for n, c in remaining.items() if c == 0]
        while queue:
            current = queue.pop()
            order.append(current)
            for d in dependants[current]:
                remaining[d] -= 1
                if remaining[d] == 0:
                    queue.append(d)
        return cls(
            template=template,
            nodes=nodes,
            deps={n: tuple(d) for n, d in deps.items()},
            dependants={n: tuple(d) for n, d in dependants.items()},
            has_expressions={n.id: _has_expression(n) for n in template.nodes},
            key_part={n.id: _key_part(n) for n in template.nodes},
            order=tuple(order),
        )

    def rollback_ids(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.rollback]

    def idempotency_key(self, run_id: UUID, node_id: str) -> str:
        return f"{run_id}:{node_id}:{self.key_part[node_id]}"


def _has_expression(node: Node) -> bool:
    return node.condition is not None or "${{" in json.dumps(node.inputs)


def _key_part(node: Node) -> str:
    """Stable across attempts (and retries by hand): derived from the node's definition."""
    body = json.dumps(node.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class Plans:
    """Plans by template version id; versions are immutable, so entries never go stale."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._plans: OrderedDict[UUID, Plan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: WorkflowStore, version_id: UUID) -> Plan:
        with self._lock:
            plan = self._plans.get(version_id)
            if plan is not None:
                self._plans.move_to_end(version_id)
                return plan
        document = store.document(version_id)
        if document is None:
            raise StellaError(f"template version {version_id} is not visible")
        plan = Plan.of(Template.model_validate(document))
        with self._lock:
            self._plans[version_id] = plan
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return plan
