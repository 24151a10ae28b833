"""The graph of a template: order, cycles, what leads to and from a node, the rollback path."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence

from stella_core.errors import NotFoundError
from stella_core.workflows.model import (
    Node,
    Template,
)
from stella_core.workflows.template.problems import CycleError

# --- graph ----------------------------------------------------------------------------------


class Graph:
    """Adjacency of a template over its known nodes (edges to unknown nodes are left out)."""

    def __init__(self, template: Template) -> None:
        self.index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        for node in template.nodes:
            if node.id not in self.index:
                self.index[node.id] = len(self.index)
                self.nodes[node.id] = node
        self.preds: dict[str, list[str]] = {nid: [] for nid in self.index}
        self.succs: dict[str, list[str]] = {nid: [] for nid in self.index}
        seen: set[tuple[str, str]] = set()
        for edge in template.edges:
            key = (edge.source, edge.target)
            if key in seen or edge.source not in self.index or edge.target not in self.index:
                continue
            seen.add(key)
            self.succs[edge.source].append(edge.target)
            self.preds[edge.target].append(edge.source)

    def _require(self, node_id: str) -> None:
        if node_id not in self.index:
            raise NotFoundError(f"the template has no node '{node_id}'")

    def _walk(self, start: str, links: Mapping[str, list[str]]) -> set[str]:
        self._require(start)
        found: set[str] = set()
        queue = deque(links[start])
        while queue:
            nid = queue.popleft()
            if nid not in found:
                found.add(nid)
                queue.extend(links[nid])
        return found

    def ancestors(self, node_id: str) -> set[str]:
        return self._walk(node_id, self.preds)

    def descendants(self, node_id: str) -> set[str]:
        return self._walk(node_id, self.succs)

    def topological(self) -> tuple[list[str], list[str]]:
        """(order, left over): Kahn's algorithm, main path first, ties in document order. Nodes
        on or after a cycle are left over."""
        indegree = {nid: len(p) for nid, p in self.preds.items()}

        def key(nid: str) -> tuple[bool, int]:
            return (self.nodes[nid].rollback, self.index[nid])

        ready = [key(n) for n, d in indegree.items() if d == 0]
        heapq.heapify(ready)
        ids = list(self.index)
        order: list[str] = []
        while ready:
            _, idx = heapq.heappop(ready)
            nid = ids[idx]
            order.append(nid)
            for succ in self.succs[nid]:
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    heapq.heappush(ready, key(succ))
        done = set(order)
        return order, [n for n in ids if n not in done]

    def find_cycle(self, within: Iterable[str]) -> list[str]:
        """One cycle among `within` (nodes left over by `topological`), as [a, b, ..., a]."""
        pool = set(within)
        # Every left-over node has a left-over predecessor; walking predecessors must repeat.
        start = next(iter(sorted(pool, key=self.index.__getitem__)))
        path: list[str] = []
        position: dict[str, int] = {}
        nid = start
        while nid not in position:
            position[nid] = len(path)
            path.append(nid)
            nid = next(p for p in self.preds[nid] if p in pool)
        cycle = path[position[nid] :]
        cycle.reverse()  # predecessors were walked; show the edges' direction
        first = cycle.index(min(cycle, key=self.index.__getitem__))
        cycle = cycle[first:] + cycle[:first]  # start at the node that comes first in the document
        return [*cycle, cycle[0]]

    def components(self, within: Iterable[str]) -> list[list[str]]:
        """Strongly connected components among `within` (Tarjan's algorithm, iterative so a long
        chain cannot exhaust the recursion limit)."""
        pool = set(within)
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        out: list[list[str]] = []
        for root in sorted(pool, key=self.index.__getitem__):
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work: list[tuple[str, Iterator[str]]] = [(root, iter(self.succs[root]))]
            while work:
                v, successors = work[-1]
                descended = False
                for w in successors:
                    if w not in pool:
                        continue
                    if w not in index:
                        index[w] = low[w] = len(index)
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(self.succs[w])))
                        descended = True
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                if descended:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    component: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    out.append(component)
        return out

    def ancestor_bits(self) -> dict[str, int]:
        """Ancestor sets as bitsets over `index` (fast for large graphs; cycles tolerated)."""
        order, rest = self.topological()
        bits: dict[str, int] = {}
        for nid in [*order, *rest]:
            acc = 0
            for pred in self.preds[nid]:
                acc |= bits.get(pred, 0) | (1 << self.index[pred])
            bits[nid] = acc
        return bits


def _cycle_message(cycle: Sequence[str]) -> str:
    return "cycle: " + " → ".join(cycle)


def topological_order(template: Template) -> list[str]:
    """Node ids so that every edge goes forward; main nodes first, then the rollback path, ties in
    document order. Raises CycleError naming the nodes of a cycle."""
    graph = Graph(template)
    for edge in template.edges:
        if edge.source == edge.target and edge.source in graph.index:
            raise CycleError(_cycle_message([edge.source, edge.source]), [edge.source])
    order, rest = graph.topological()
    if rest:
        cycle = graph.find_cycle(rest)
        raise CycleError("the template has a " + _cycle_message(cycle), cycle[:-1])
    return order


def ancestors(template: Template, node_id: str) -> set[str]:
    """Every node `node_id` depends on, directly or not."""
    return Graph(template).ancestors(node_id)


def descendants(template: Template, node_id: str) -> set[str]:
    """Every node that depends on `node_id`, directly or not."""
    return Graph(template).descendants(node_id)


def dependencies(template: Template, node_id: str) -> set[str]:
    """The nodes `node_id` has an edge from (it runs after them)."""
    graph = Graph(template)
    graph._require(node_id)
    return set(graph.preds[node_id])


def dependants(template: Template, node_id: str) -> set[str]:
    """The nodes with an edge from `node_id` (they run after it)."""
    graph = Graph(template)
    graph._require(node_id)
    return set(graph.succs[node_id])


def main_nodes(template: Template) -> list[Node]:
    """The nodes of the normal path, in document order."""
    return [n for n in template.nodes if not n.rollback]


def rollback_nodes(template: Template) -> list[Node]:
    """The nodes of the rollback path (`rollback: true`), in document order."""
    return [n for n in template.nodes if n.rollback]
