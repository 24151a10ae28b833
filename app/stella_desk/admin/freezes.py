"""Freeze windows: no promotion into an environment between two times, except by the people a
freeze allows. Release managers and admins add them; only admins edit or lift one (loosening a
freeze is an admin's call, and the database holds to it), always with a reason that is kept."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QDateTime, Qt
from PySide6.QtWidgets import QComboBox, QDateTimeEdit, QLineEdit, QWidget

from stella_core.environments.model import Freeze
from stella_core.errors import DefinitionError
from stella_desk import humane
from stella_desk.admin.common import (
    ADMINS,
    WRITERS,
    AdminTab,
    Col,
    FormDialog,
    field_note,
    may,
    people_list,
    ticked,
)
from stella_desk.chrome import label
from stella_desk.ops import Change, OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella


def state(freeze: Freeze, now: datetime | None = None) -> str:
    at = now or datetime.now(UTC)
    if freeze.lifted:
        return "lifted"
    if freeze.active(at):
        return "in force"
    return "upcoming" if freeze.starts_at > at else "ended"


def changed_text(freeze: Freeze) -> str:
    if freeze.changed_at is None:
        return ""
    verb = "lifted" if freeze.lifted else "edited"
    return f"{verb} by {freeze.changed_by}, {humane.when(freeze.changed_at)}"


COLUMNS = [
    Col("Environment", lambda f: f.environment, 110),
    Col("State", state, 92),
    Col("From", lambda f: humane.when(f.starts_at), 132),
    Col("Until", lambda f: humane.when(f.ends_at), 132),
    Col("Reason", lambda f: f.reason, 140),
    Col(
        "Allowed",
        lambda f: ", ".join(f.allow) or "nobody",
        110,
        lambda f: "May still promote: " + (", ".join(f.allow) or "nobody"),
    ),
    Col("Set by", lambda f: f.created_by, 80),
    Col(
        "Changed",
        changed_text,
        200,
        lambda f: f"{changed_text(f)}: {f.change_reason}" if f.change_reason else "",
    ),
]


class FreezesTab(AdminTab):
    noun = "freezes"
    one = "freeze"
    writers = WRITERS  # adding; editing and lifting are for admins (see follow_role)
    topics = (Change.ENVIRONMENTS,)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(ops, session, COLUMNS, parent)
        self.add = self.add_button("Add freeze…", self.open_add, primary=True)
        self.edit = self.add_button("Edit…", self.open_edit)
        self.lift = self.add_button("Lift…", self.open_lift)
        self.environments: list[str] = []

    def load(self, stella: Stella) -> list[Any]:
        self.environments = [e.name for e in stella.environments.list()]
        # Newest first: what is in force and coming matters more than last year's.
        return sorted(stella.environments.freezes(), key=lambda f: f.starts_at, reverse=True)

    def follow_role(self) -> None:
        super().follow_role()
        admin = may(self.session, ADMINS)
        self.edit.setVisible(admin)
        self.lift.setVisible(admin)
        if self.may_edit and not admin:
            self.read_only.setText("Admins edit and lift freezes")
            self.read_only.setVisible(True)

    def _selection_changed(self) -> None:
        freeze = self.selected()
        open_ = freeze is not None and state(freeze) in ("in force", "upcoming")
        self.edit.setEnabled(open_)
        self.lift.setEnabled(open_)
        why = "" if open_ else "Select a freeze that is in force or upcoming"
        self.edit.setToolTip(why)
        self.lift.setToolTip(why)

    def open_add(self) -> FreezeDialog:
        dialog = FreezeDialog(self.ops, self.session, None, self.environments, parent=self)
        dialog.done_with.connect(lambda f: self.status_message.emit(f"{f.environment} frozen"))
        self.open_dialog(dialog)
        self.ops.spawn(dialog.load())
        return dialog

    def open_edit(self) -> FreezeDialog | None:
        freeze = self.selected()
        if freeze is None:
            return None
        dialog = FreezeDialog(self.ops, self.session, freeze, self.environments, parent=self)
        dialog.done_with.connect(
            lambda f: self.status_message.emit(f"Freeze on {f.environment} changed")
        )
        self.open_dialog(dialog)
        self.ops.spawn(dialog.load())
        return dialog

    def open_lift(self) -> LiftDialog | None:
        freeze = self.selected()
        if freeze is None:
            return None
        dialog = LiftDialog(self.ops, self.session, freeze, parent=self)
        dialog.done_with.connect(
            lambda f: self.status_message.emit(f"Freeze on {f.environment} lifted")
        )
        self.open_dialog(dialog)
        return dialog


def _edit_time(value: datetime) -> QDateTimeEdit:
    edit = QDateTimeEdit(QDateTime(value.astimezone()))  # shown in local time
    edit.setDisplayFormat("d MMM yyyy, HH:mm")
    edit.setCalendarPopup(True)
    return edit


def _time_of(edit: QDateTimeEdit) -> datetime:
    value: datetime = edit.dateTime().toPython()  # type: ignore[assignment]
    return value.astimezone().astimezone(UTC)  # naive local time, as edited


class FreezeDialog(FormDialog):
    """Add a freeze, or (admins) change one: its dates, reason and who may still promote."""

    def __init__(
        self,
        ops: Ops,
        session: Session,
        freeze: Freeze | None,
        environments: list[str],
        parent: QWidget | None = None,
    ) -> None:
        adding = freeze is None
        super().__init__(
            ops,
            session,
            title="Add freeze" if adding else f"Edit the freeze on {freeze.environment}",  # type: ignore[union-attr]
            intro=(
                "No promotion goes into the environment between these times, except by the "
                "people you allow. Times are this computer's local time."
            ),
            primary="Add freeze" if adding else "Save change",
            changes=[Change.ENVIRONMENTS],
            parent=parent,
        )
        self.freeze = freeze
        self.environment = QComboBox()
        if freeze is not None:
            self.environment.addItem(freeze.environment)
            self.environment.setEnabled(False)
        else:
            self.environment.addItems(environments)
        self.form.addRow("Environment", self.environment)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.start = _edit_time(freeze.starts_at if freeze else now + timedelta(hours=1))
        self.end = _edit_time(freeze.ends_at if freeze else now + timedelta(days=1, hours=1))
        self.form.addRow("From", self.start)
        self.form.addRow("Until", self.end)
        self.reason = QLineEdit(freeze.reason if freeze else "")
        self.reason.setPlaceholderText("why the environment is frozen")
        self.form.addRow("Reason", self.reason)
        self.allow = people_list([], ())
        self.form.addRow("May still promote", self.allow)
        self.why = QLineEdit()
        if freeze is not None:
            self.why.setPlaceholderText("why it changes (required, kept in the audit log)")
            self.form.addRow("Why change it", self.why)
            if freeze.active(datetime.now(UTC)):
                self.start.setEnabled(False)
                self.form.addRow("", field_note("The freeze is in force: its start stays."))

    async def load(self) -> None:
        stella = self.session.require()
        try:
            people = await self.ops.run(
                lambda _report: [u.name for u in stella.tenancy.list_users() if not u.disabled],
                label="Reading people",
                present_errors=False,
            )
        except OpFailed as exc:
            self.show_error(exc.message)
            return
        allowed = self.freeze.allow if self.freeze else ()
        for name in people:
            self.allow.addItem(name)
            item = self.allow.item(self.allow.count() - 1)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if name in allowed else Qt.CheckState.Unchecked
            )

    def work(self) -> Callable[[Stella], Any]:
        start, end = _time_of(self.start), _time_of(self.end)
        reason = self.reason.text().strip()
        allow = ticked(self.allow)
        if end <= start:
            raise DefinitionError("The freeze must end after it starts.")
        if not reason:
            raise DefinitionError("Say why the environment is frozen.")
        if self.freeze is None:
            env = self.environment.currentText()
            if not env:
                raise DefinitionError("Add an environment first.")
            return lambda stella: stella.environments.freeze(
                env, start=start, end=end, reason=reason, allow=allow
            )
        freeze = self.freeze
        why = self.why.text().strip()
        if not why:
            raise DefinitionError("Say why the freeze changes: it is kept in the audit log.")
        changes: dict[str, Any] = {}
        # The editor shows minutes: compare at that precision, so an untouched field stays.
        if start != freeze.starts_at.replace(second=0, microsecond=0):
            changes["start"] = start
        if end != freeze.ends_at.replace(second=0, microsecond=0):
            changes["end"] = end
        if reason != freeze.reason:
            changes["freeze_reason"] = reason
        if sorted(allow) != sorted(freeze.allow):
            changes["allow"] = allow
        if not changes:
            raise DefinitionError("Nothing changed.")
        return lambda stella: stella.environments.edit_freeze(freeze.id, reason=why, **changes)


class LiftDialog(FormDialog):
    """Admins: end a freeze now, with a reason."""

    def __init__(
        self, ops: Ops, session: Session, freeze: Freeze, parent: QWidget | None = None
    ) -> None:
        starts = "now" if freeze.active(datetime.now(UTC)) else humane.when(freeze.starts_at)
        super().__init__(
            ops,
            session,
            title=f"Lift the freeze on {freeze.environment}",
            intro=(
                f"The freeze ({freeze.reason}) from {starts} until "
                f"{humane.when(freeze.ends_at)} ends now, and promotions it blocked go ahead. "
                "Who lifted it, when and why is kept."
            ),
            primary="Lift freeze",
            changes=[Change.ENVIRONMENTS, Change.PROMOTIONS],
            parent=parent,
        )
        self.freeze = freeze
        self.why = QLineEdit()
        self.why.setPlaceholderText("why it is lifted (required)")
        self.form.addRow("Reason", self.why)
        self.form.addRow("", label(f"Freeze {humane.short_id(freeze.id)}", "muted"))

    def work(self) -> Callable[[Stella], Any]:
        why = self.why.text().strip()
        if not why:
            raise DefinitionError("Say why the freeze is lifted: it is kept in the audit log.")
        freeze_id = self.freeze.id
        return lambda stella: stella.environments.lift_freeze(freeze_id, reason=why)
