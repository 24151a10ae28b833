"""The problems panel: what `validate()` found, one row per problem (step, field, message)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from stella_core.workflows.model import Problem
from stella_desk import theme
from stella_desk.workflows.document import WorkflowDocument

PROBLEM_ROLE = Qt.ItemDataRole.UserRole + 1


class ProblemsPanel(QTreeWidget):
    problem_activated = Signal(object, object)  # node id (or None), field (or None)
    count_changed = Signal(int)

    def __init__(self, document: WorkflowDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("problems")
        self.setColumnCount(3)
        self.setHeaderLabels(["Step", "Field", "Problem"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setColumnWidth(0, 150)
        self.setColumnWidth(1, 150)
        self.problems: list[Problem] = []
        document.problems_changed.connect(self.show_problems)
        self.itemClicked.connect(self._activate)
        self.itemActivated.connect(self._activate)
        self.show_problems(document.problems)

    def show_problems(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        self.clear()
        if not problems:
            item = QTreeWidgetItem(["", "", "No problems: the workflow is valid."])
            item.setForeground(2, QBrush(QColor("#15803d")))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.addTopLevelItem(item)
        for problem in problems:
            item = QTreeWidgetItem(
                [problem.node or "(workflow)", problem.field or "", problem.message]
            )
            item.setToolTip(2, problem.message)
            item.setForeground(0, QBrush(QColor(theme.DANGER)))
            item.setData(0, PROBLEM_ROLE, problem)
            self.addTopLevelItem(item)
        self.count_changed.emit(len(problems))

    def row_for(self, node: str | None, field: str | None = None) -> QTreeWidgetItem | None:
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            problem = item.data(0, PROBLEM_ROLE) if item is not None else None
            if problem is not None and problem.node == node and field in (None, problem.field):
                return item
        return None

    def _activate(self, item: QTreeWidgetItem, _column: int) -> None:
        problem = item.data(0, PROBLEM_ROLE)
        if isinstance(problem, Problem):
            self.problem_activated.emit(problem.node, problem.field)
