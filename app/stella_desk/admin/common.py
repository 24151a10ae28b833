"""What the administration tabs share: who may change what (the core's own rules, so the desk
never offers what the core would refuse), a table over immutable records, a tab with its
actions, and a form dialog whose errors appear in place without moving its buttons."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from stella_core.errors import StellaError
from stella_core.tenancy.model import ProductRole
from stella_desk.chrome import dialog_buttons, dialog_layout, fit_height, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops
from stella_desk.session import Session

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

AnyIndex = QModelIndex | QPersistentModelIndex

# The core's rules (services' `require`), mirrored so the desk offers only what it allows.
ADMINS: tuple[ProductRole, ...] = (ProductRole.ADMIN,)
WRITERS: tuple[ProductRole, ...] = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
ROLE_NAMES = [r.value for r in ProductRole]


def role_of(session: Session) -> ProductRole | None:
    return session.identity.role if session.identity is not None else None


def may(session: Session, roles: Sequence[ProductRole]) -> bool:
    role = role_of(session)
    return role is not None and role in roles


def who(roles: Sequence[ProductRole]) -> str:
    """'admins' or 'release managers and admins', for a read-only note."""
    names = {ProductRole.ADMIN: "admins", ProductRole.RELEASE_MANAGER: "release managers"}
    return " and ".join(names.get(r, r.value) for r in roles)


# --- tables ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Col:
    title: str
    text: Callable[[Any], str]
    width: int = 120
    tip: Callable[[Any], str] | None = None


class RecordModel(QAbstractTableModel):
    """Rows of immutable core records, in the order the core gives them."""

    def __init__(self, columns: Sequence[Col], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.records: list[Any] = []

    def set_records(self, records: Sequence[Any]) -> None:
        self.beginResetModel()
        self.records = list(records)
        self.endResetModel()

    def record(self, row: int) -> Any:
        return self.records[row]

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record = self.records[index.row()]
        column = self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text(record)
        if role == Qt.ItemDataRole.ToolTipRole:
            # Long values are cut with an ellipsis in the cell; the tooltip has them whole.
            return column.tip(record) if column.tip else column.text(record) or None
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].title
        return None


def record_table(model: RecordModel) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    view.setCornerButtonEnabled(False)
    rows = view.verticalHeader()
    rows.hide()
    rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    rows.setDefaultSectionSize(30)
    view.setAlternatingRowColors(True)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    head = view.horizontalHeader()
    head.setHighlightSections(False)
    head.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    head.setStretchLastSection(True)
    for i, column in enumerate(model.columns):
        head.resizeSection(i, column.width)
    return view


# --- a tab -----------------------------------------------------------------------------------
class AdminTab(QWidget):
    """A list of one kind of record with the actions on it. Edit controls exist only for the
    roles the core lets change these records; everyone else reads."""

    loaded = Signal()
    status_message = Signal(str)
    noun = "records"
    one = ""  # the singular, where it is not the noun without its last letter
    writers: tuple[ProductRole, ...] = ADMINS
    topics: tuple[Change, ...] = ()

    def __init__(
        self, ops: Ops, session: Session, columns: Sequence[Col], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.model = RecordModel(columns, self)
        self.view = record_table(self.model)
        self.dialog: QDialog | None = None
        self._generation = 0
        self.edit_buttons: list[QPushButton] = []

        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(0, 12, 0, 0)
        self.column.setSpacing(8)
        self.action_row = QHBoxLayout()
        self.action_row.setSpacing(8)
        self.count = label(kind="muted")
        self.read_only = label("", "chip")
        self.read_only.hide()
        self.action_row.addWidget(self.count)
        self.action_row.addWidget(self.read_only)
        self.action_row.addStretch(1)
        self.column.addLayout(self.action_row)
        self.column.addWidget(self.view, 1)
        # A failed load is said here, where the list would be (the list keeps its place).
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        self.column.addWidget(self.error)
        self.view.selectionModel().currentRowChanged.connect(lambda *_: self._selection_changed())
        ops.changed.connect(self._on_changes)

    def add_button(
        self, text: str, handler: Callable[[], Any], *, primary: bool = False
    ) -> QPushButton:
        button = QPushButton(text)
        if primary:
            button.setProperty("kind", "primary")
        button.clicked.connect(lambda _checked=False: handler())
        self.action_row.addWidget(button)
        self.edit_buttons.append(button)
        return button

    def selected(self) -> Any:
        index = self.view.currentIndex()
        return self.model.record(index.row()) if index.isValid() else None

    def select_where(self, test: Callable[[Any], bool]) -> bool:
        for row, record in enumerate(self.model.records):
            if test(record):
                self.view.selectRow(row)
                return True
        return False

    # --- roles -----------------------------------------------------------------------------
    @property
    def may_edit(self) -> bool:
        return may(self.session, self.writers)

    def follow_role(self) -> None:
        """Edit controls exist only for those who may edit; others get a note saying who may."""
        editable = self.may_edit
        for button in self.edit_buttons:
            button.setVisible(editable)
        self.read_only.setText(f"Read only: {who(self.writers)} change these")
        self.read_only.setVisible(self.session.identity is not None and not editable)
        self._selection_changed()

    def _selection_changed(self) -> None:
        """Subclasses enable the actions that need a selected record."""

    # --- loading ---------------------------------------------------------------------------
    def load(self, stella: Stella) -> list[Any]:  # runs on a worker thread
        raise NotImplementedError

    async def refresh(self) -> None:
        self._generation += 1
        generation = self._generation
        stella = self.session.require()
        self.follow_role()
        try:
            records = await self.ops.run(
                lambda _report: self.load(stella),
                label=f"Loading {self.noun}",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._generation:
                self.error.setText(f"Could not load {self.noun}: {exc.message}")
            return
        if generation != self._generation:
            return
        self.error.setText("")
        keep = self.selected()
        self.model.set_records(records)
        if keep is not None:
            self.select_where(lambda r: getattr(r, "id", None) == getattr(keep, "id", object()))
        self.count.setText(self.count_text(len(records)))
        self.follow_role()
        self.loaded.emit()

    def count_text(self, count: int) -> str:
        if count == 0:
            return f"No {self.noun} yet."
        if count == 1:
            return f"1 {self.one or self.noun.removesuffix('s')}"
        return f"{count} {self.noun}"

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        if changes.touches(Change.PERSON, *self.topics):
            self.ops.spawn(self.refresh())

    def open_dialog(self, dialog: QDialog) -> QDialog:
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.reject()
        self.dialog = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        return dialog


# --- a form dialog ---------------------------------------------------------------------------
class FormDialog(QDialog):
    """Fields, an error line that is always there (so showing an error moves nothing), Cancel
    and the primary action. `work()` checks the fields and returns what to run on a worker
    thread; the core's refusal is shown in place and the dialog stays open."""

    done_with = Signal(object)  # what the core returned

    def __init__(
        self,
        ops: Ops,
        session: Session,
        *,
        title: str,
        intro: str,
        primary: str,
        changes: Sequence[Change],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ops = ops
        self.session = session
        self.changes = list(changes)
        self.result_value: Any = None
        self.setWindowTitle(title)
        self.setMinimumWidth(600)
        self.outer = dialog_layout(self, title, intro)
        self.form = QFormLayout()
        self.form.setHorizontalSpacing(14)
        self.form.setVerticalSpacing(8)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.outer.addLayout(self.form)
        self.error = label(kind="error", selectable=True)
        self.error.setWordWrap(True)
        # Room for two lines, kept whether or not an error shows: the buttons never move.
        self.error.setMinimumHeight(2 * self.error.fontMetrics().lineSpacing() + 6)
        self.error.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.outer.addWidget(self.error)
        self.outer.addStretch(1)
        buttons, self.cancel_button, self.primary = dialog_buttons(primary)
        self.primary.setEnabled(True)
        self.outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.primary.clicked.connect(lambda _checked=False: self.ops.spawn(self.submit()))
        self.busy_label = primary
        self._watching = False

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        fit_height(self, self.outer)  # every row at its full height, none squeezed
        if not self._watching:
            # The next edit clears an error shown for the last attempt (its line stays).
            self._watching = True
            for edit in self.findChildren(QLineEdit):
                edit.textEdited.connect(lambda _text: self.show_error(""))

    def work(self) -> Callable[[Stella], Any]:
        raise NotImplementedError

    def show_error(self, message: str) -> None:
        self.error.setText(message)

    async def submit(self) -> Any:
        if not self.primary.isEnabled():
            return None
        try:
            job = self.work()
        except StellaError as exc:
            self.show_error(exc.message)
            return None
        stella = self.session.require()
        self.show_error("")
        self.primary.setEnabled(False)
        try:
            value = await self.ops.run(
                lambda _report: job(stella),
                label=self.busy_label.rstrip("…"),
                changes=self.changes,
                present_errors=False,  # shown here, where the person is looking
            )
        except OpFailed as exc:
            self.show_error(exc.message)
            return None
        finally:
            self.primary.setEnabled(True)
        self.result_value = value
        self.done_with.emit(value)
        self.accept()
        return value


def people_list(names: Sequence[str], checked: Sequence[str] = ()) -> QListWidget:
    """A short list of people to tick (approvers, who may still promote into a freeze)."""
    widget = QListWidget()
    widget.setFixedHeight(104)
    for name in names:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if name in checked else Qt.CheckState.Unchecked)
        widget.addItem(item)
    return widget


def ticked(widget: QListWidget) -> list[str]:
    return [
        widget.item(i).text()
        for i in range(widget.count())
        if widget.item(i).checkState() == Qt.CheckState.Checked
    ]


def field_note(text: str) -> QLabel:
    note = label(text, "muted")
    note.setWordWrap(True)
    return note
