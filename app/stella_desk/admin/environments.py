"""Environments and their policy: the promotion order, who approves, how many, separation of
duties and quorums. A policy is set by admins only, with a reason, and every version is signed
by the admin (the core's `EnvironmentService.add`/`set`); the history lists every version."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from stella_core.environments.model import MAX_ORDER, MAX_REQUIRED_APPROVALS, Environment
from stella_core.errors import DefinitionError
from stella_core.limits import check_name
from stella_desk import humane
from stella_desk.admin.common import (
    ADMINS,
    ROLE_NAMES,
    AdminTab,
    Col,
    FormDialog,
    RecordModel,
    field_note,
    people_list,
    record_table,
    ticked,
)
from stella_desk.chrome import label
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella


def approvals_text(env: Environment) -> str:
    quorum = ", ".join(f"{n} {role}" for role, n in sorted(env.quorum.items()))
    base = "none" if env.required_approvals == 0 else str(env.required_approvals)
    return f"{base} (quorum: {quorum})" if quorum else base


def approvers_text(env: Environment) -> str:
    named = f"; named: {', '.join(env.approver_persons)}" if env.approver_persons else ""
    return ", ".join(env.approver_roles) + named


COLUMNS = [
    Col("Order", lambda e: str(e.order), 60),
    Col("Environment", lambda e: e.name, 150),
    Col("Approvals", approvals_text, 150),
    Col("Who approves", approvers_text, 200),
    Col("Separation of duties", lambda e: "yes" if e.separation_of_duties else "no", 150),
    Col("Workflow", lambda e: e.workflow or "none", 130),
    Col("Policy", lambda e: f"version {e.policy_version}", 90),
]

HISTORY_COLUMNS = [
    Col("Version", lambda v: str(v["version"]), 70),
    Col(
        "Changed",
        lambda v: humane.when(v["changed_at"]),
        150,
        lambda v: humane.when_exact(v["changed_at"]),
    ),
    Col("By", lambda v: v["changed_by"], 110),
    Col(
        "Signed policy packet",
        lambda v: v["packet"] or "unsigned (from before signed policies)",
        300,
    ),
]


class EnvironmentsTab(AdminTab):
    noun = "environments"
    writers = ADMINS
    topics = (Change.ENVIRONMENTS,)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(ops, session, COLUMNS, parent)
        self.add = self.add_button("Add environment…", self.open_add, primary=True)
        self.edit = self.add_button("Edit policy…", self.open_edit)
        # Below the list: every version of the selected environment's policy.
        self.history_title = label("POLICY HISTORY", "section")
        self.history = RecordModel(HISTORY_COLUMNS, self)
        self.history_view = record_table(self.history)
        lower = QWidget()
        box = QVBoxLayout(lower)
        box.setContentsMargins(0, 6, 0, 0)
        box.setSpacing(6)
        box.addWidget(self.history_title)
        box.addWidget(self.history_view, 1)
        self.column.removeWidget(self.view)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(lower)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([260, 200])
        self.column.insertWidget(1, splitter, 1)
        self._history_generation = 0

    def load(self, stella: Stella) -> list[Any]:
        return stella.environments.list()

    def _selection_changed(self) -> None:
        env = self.selected()
        self.edit.setEnabled(env is not None)
        if env is None:
            self.history.set_records([])
            self.history_title.setText("POLICY HISTORY · SELECT AN ENVIRONMENT TO SEE ITS VERSIONS")
        elif self.session.ready:
            self.ops.spawn(self.show_history(env.name))

    async def show_history(self, name: str) -> list[dict[str, Any]]:
        self._history_generation += 1
        generation = self._history_generation
        stella = self.session.require()
        try:
            versions = await self.ops.run(
                lambda _report: stella.environments.policy_versions(name),
                label=f"Reading {name}'s policy history",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._history_generation:
                self.history_title.setText(f"POLICY HISTORY · {name} · {exc.message}")
            return []
        if generation == self._history_generation:
            self.history_title.setText(f"POLICY HISTORY · {name.upper()}")
            self.history.set_records(list(reversed(versions)))  # newest first
        return versions

    # --- dialogs ---------------------------------------------------------------------------
    def open_add(self) -> EnvironmentDialog:
        dialog = EnvironmentDialog(self.ops, self.session, None, self.model.records, parent=self)
        dialog.done_with.connect(self._changed)
        self.open_dialog(dialog)
        self.ops.spawn(dialog.load())
        return dialog

    def open_edit(self) -> EnvironmentDialog | None:
        env = self.selected()
        if env is None:
            return None
        dialog = EnvironmentDialog(self.ops, self.session, env, self.model.records, parent=self)
        dialog.done_with.connect(self._changed)
        self.open_dialog(dialog)
        self.ops.spawn(dialog.load())
        return dialog

    def _changed(self, env: Environment) -> None:
        self.status_message.emit(f"Environment {env.name}: policy version {env.policy_version}")


class EnvironmentDialog(FormDialog):
    """Add an environment or change its policy (a new, signed version)."""

    def __init__(
        self,
        ops: Ops,
        session: Session,
        env: Environment | None,
        existing: list[Environment],
        parent: QWidget | None = None,
    ) -> None:
        adding = env is None
        super().__init__(
            ops,
            session,
            title="Add environment" if adding else f"Policy of {env.name}",  # type: ignore[union-attr]
            intro=(
                "An environment's policy says who approves promotions into it. You sign it "
                "with your own key; every version is kept."
            ),
            primary="Add environment" if adding else "Sign new version",
            changes=[Change.ENVIRONMENTS],
            parent=parent,
        )
        self.env = env
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. prod")
        if env is not None:
            self.name.setText(env.name)
            self.name.setReadOnly(True)
        self.form.addRow("Name", self.name)
        self.order = QSpinBox()
        self.order.setRange(0, MAX_ORDER)
        self.order.setValue(env.order if env else (max((e.order for e in existing), default=0) + 1))
        self.order.setToolTip("Promotions go through environments in this order, lowest first")
        self.form.addRow("Promotion order", self.order)
        self.required = QSpinBox()
        self.required.setRange(0, MAX_REQUIRED_APPROVALS)
        self.required.setValue(env.required_approvals if env else 0)
        self.form.addRow("Required approvals", self.required)
        self.sod = QCheckBox("The requester may not approve their own promotion")
        self.sod.setChecked(env.separation_of_duties if env else False)
        self.form.addRow("Separation of duties", self.sod)
        roles_row = QHBoxLayout()
        self.roles: dict[str, QCheckBox] = {}
        chosen = env.approver_roles if env else ("approver", "admin")
        for role in ROLE_NAMES:
            box = QCheckBox(role)
            box.setChecked(role in chosen)
            self.roles[role] = box
            roles_row.addWidget(box)
        roles_row.addStretch(1)
        self.form.addRow("Roles that approve", roles_row)
        self.quorum: dict[str, QSpinBox] = {}
        quorum_grid = QGridLayout()
        quorum_grid.setHorizontalSpacing(8)
        for i, role in enumerate(ROLE_NAMES):
            spin = QSpinBox()
            spin.setRange(0, MAX_REQUIRED_APPROVALS)
            spin.setValue((env.quorum if env else {}).get(role, 0))
            spin.setSpecialValueText("none")
            spin.setToolTip(f"At least this many approvals from {role}s (none: no quorum)")
            self.quorum[role] = spin
            quorum_grid.addWidget(label(role, "muted"), i // 2, (i % 2) * 2)
            quorum_grid.addWidget(spin, i // 2, (i % 2) * 2 + 1)
        quorum_grid.setColumnStretch(1, 1)
        quorum_grid.setColumnStretch(3, 1)
        self.form.addRow("Quorum", quorum_grid)
        self.people = people_list([], ())
        self.form.addRow("Named approvers", self.people)
        self.form.addRow("", field_note("Named people may approve whatever their role."))
        self.workflow = QComboBox()
        self.workflow.addItem("none", None)
        self.form.addRow("Workflow", self.workflow)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText(
            "why (kept in the signed policy)" if adding else "why the policy changes (required)"
        )
        self.form.addRow("Reason", self.reason)

    async def load(self) -> None:
        """The people and workflows to choose from."""
        stella = self.session.require()
        try:
            people, workflows = await self.ops.run(
                lambda _report: (
                    [u.name for u in stella.tenancy.list_users() if not u.disabled],
                    [t.name for t in stella.workflows.list_templates()],
                ),
                label="Reading people and workflows",
                present_errors=False,
            )
        except OpFailed as exc:
            self.show_error(exc.message)
            return
        chosen = self.env.approver_persons if self.env else ()
        for name in people:
            self.people.addItem(name)
            item = self.people.item(self.people.count() - 1)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if name in chosen else Qt.CheckState.Unchecked)
        for name in workflows:
            self.workflow.addItem(name, name)
        if self.env is not None and self.env.workflow:
            self.workflow.setCurrentIndex(max(self.workflow.findData(self.env.workflow), 0))

    def settings(self) -> dict[str, Any]:
        return {
            "order": self.order.value(),
            "required_approvals": self.required.value(),
            "separation_of_duties": self.sod.isChecked(),
            "workflow": self.workflow.currentData(),
            "approver_roles": tuple(r for r, box in self.roles.items() if box.isChecked()),
            "approver_persons": tuple(ticked(self.people)),
            "quorum": {r: s.value() for r, s in self.quorum.items() if s.value() > 0},
        }

    def work(self) -> Callable[[Stella], Any]:
        settings = self.settings()
        reason = self.reason.text().strip()
        if not settings["approver_roles"]:
            raise DefinitionError("Choose at least one role that approves.")
        if self.env is None:
            name = self.name.text().strip()
            if not name:
                raise DefinitionError("An environment needs a name.")
            check_name("environment", name)
            return lambda stella: stella.environments.add(name, reason=reason, **settings)
        env = self.env
        before = {
            "order": env.order,
            "required_approvals": env.required_approvals,
            "separation_of_duties": env.separation_of_duties,
            "workflow": env.workflow,
            "approver_roles": tuple(env.approver_roles),
            "approver_persons": tuple(env.approver_persons),
            "quorum": dict(env.quorum),
        }
        changes = {k: v for k, v in settings.items() if _comparable(before[k]) != _comparable(v)}
        if not changes:
            raise DefinitionError("Nothing changed: this is the policy already.")
        if not reason:
            raise DefinitionError("A policy change needs a reason: say why it changes.")
        return lambda stella: stella.environments.set(env.name, reason=reason, **changes)


def _comparable(value: Any) -> Any:
    # Roles and people are sets: the order they are ticked in changes nothing.
    return tuple(sorted(value)) if isinstance(value, tuple) else value
