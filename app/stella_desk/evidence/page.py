"""The Evidence page: the tenant's signed ledger, newest first, and the selected packet's detail.

The filter bar asks the ledger (type, release, environment, person, time); the search box narrows
what came back. Selecting a packet fetches it decoded and checked (signature, chain link,
checkpoint). From here an auditor replays a packet, seals the ledger, exports a capsule and
verifies an archive offline. Every database call and every check runs through `Ops`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QLineEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stella_core.evidence.model import CheckpointRow, Filter, PacketRow
from stella_desk import theme
from stella_desk.chrome import PAGE_MARGINS, EmptyState, PageHeader, label
from stella_desk.evidence.detail import PacketDetail
from stella_desk.evidence.export import RANGE, RELEASE, RUN, ExportChoice, ExportDialog
from stella_desk.evidence.filters import FilterBar
from stella_desk.evidence.table import (
    Column,
    PacketFilterProxy,
    PacketRole,
    PacketTableModel,
    TypeBadgeDelegate,
    local_time,
)
from stella_desk.evidence.verify import VerifyDialog
from stella_desk.ops import Change, OpChanges, OpFailed, Ops, Reads
from stella_desk.session import Session
from stella_desk.tables import record_view

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

# Date edits and the key list are not in the window's sheet; they follow its line edits. Colours
# are the palette's, so they follow View > Theme too.
EVIDENCE_STYLE = f"""
QDateEdit, QDateTimeEdit {{
    background: palette(base); border: 1px solid palette(dark); border-radius: 6px;
    padding: 4px 6px;
}}
QDateEdit:focus, QDateTimeEdit:focus {{ border: 1px solid palette(highlight); }}
QDateEdit:disabled, QDateTimeEdit:disabled {{ color: palette(mid); background: palette(window); }}
QDateEdit::drop-down, QDateTimeEdit::drop-down {{ border: none; width: 22px; }}
QDateEdit::down-arrow, QDateTimeEdit::down-arrow {{
    image: url({theme.CHEVRON}); width: 12px; height: 12px;
}}
QListWidget#trustedKeys {{
    background: palette(base); border: 1px solid palette(dark); border-radius: 6px; padding: 2px;
}}
QTableWidget {{
    background: palette(base); border: 1px solid palette(mid); border-radius: 8px;
    selection-background-color: palette(highlight); selection-color: palette(highlighted-text);
    outline: 0;
}}
QTableWidget::item {{ padding: 0 6px; border: none; }}
"""

COLUMN_WIDTHS = {
    Column.SEQ: 56,
    Column.TYPE: 104,
    Column.CREATED: 150,
    Column.RELEASE: 140,
    Column.ENVIRONMENT: 100,
    Column.BY: 90,
    Column.SIGNER: 210,
}


@dataclass(frozen=True)
class Ledger:
    """One load: the packets the filter selects, who owns each signing key, the last seal."""

    packets: list[PacketRow]
    owners: dict[str, str]
    checkpoint: CheckpointRow | None


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def read_ledger(stella: Stella, where: Filter) -> Ledger:
    packets = stella.evidence.find(where)
    owners = {k.key_id: k.owner for k in stella.evidence.signing_keys()}
    checkpoints = stella.evidence.checkpoints()
    return Ledger(packets, owners, checkpoints[-1] if checkpoints else None)


class EvidencePage(QWidget):
    loaded = Signal()  # after every (re)load of the list
    status_message = Signal(str)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.model = PacketTableModel(self)
        self.proxy = PacketFilterProxy(self.model, self)
        self.checkpoint: CheckpointRow | None = None
        self.export_dialog: ExportDialog | None = None
        self.verify_dialog: VerifyDialog | None = None
        self._generation = 0  # a newer load supersedes an older one still in flight
        self._reads = Reads()
        self._detail_generation = 0
        self._loaded_once = False
        self._restoring = False

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(10)
        self.setStyleSheet(EVIDENCE_STYLE)
        header = PageHeader("Evidence", "Signed, chained records of every run and decision.")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search: digest, key, id, person…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(220)
        header.action_row.addWidget(self.search)
        self.seal_button = QPushButton("Seal now")
        self.seal_button.setToolTip(
            "Sign a checkpoint over the whole ledger, so no packet before it can change unseen"
        )
        self.verify_button = QPushButton("Verify archive…")
        self.verify_button.setToolTip("Check an exported capsule offline, as an auditor would")
        self.export_button = QPushButton("Export capsule…")
        self.export_button.setProperty("kind", "primary")
        self.export_button.setToolTip("Write a release's, run's or time range's evidence to a file")
        for button in (self.seal_button, self.verify_button, self.export_button):
            header.action_row.addWidget(button)
        page.addWidget(header)

        self.filters = FilterBar()
        page.addWidget(self.filters)

        self.view = record_view(self.proxy, column_widths=COLUMN_WIDTHS, sort_column=Column.SEQ)
        self.view.setItemDelegateForColumn(Column.TYPE, TypeBadgeDelegate(self.view))
        self.empty = EmptyState()
        self.list_stack = QStackedWidget()
        self.list_stack.addWidget(self.view)
        self.list_stack.addWidget(self.empty)
        self.count = label(kind="muted")
        top = QWidget()
        top_box = QVBoxLayout(top)
        top_box.setContentsMargins(0, 0, 0, 0)
        top_box.setSpacing(6)
        top_box.addWidget(self.list_stack, 1)
        top_box.addWidget(self.count)

        self.detail = PacketDetail()
        bottom = QWidget()
        bottom_box = QVBoxLayout(bottom)
        bottom_box.setContentsMargins(0, 8, 0, 0)
        bottom_box.addWidget(self.detail)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 5)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([200, 370])
        page.addWidget(splitter, 1)

        self.filters.changed.connect(lambda: self.ops.spawn(self.refresh()))
        self.search.textChanged.connect(self._on_search)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self.detail.replay_requested.connect(
            lambda packet_id: self.ops.spawn(self.replay(packet_id))
        )
        self.detail.copied.connect(lambda text: self.status_message.emit(f"Copied {text}"))
        self.seal_button.clicked.connect(lambda: self.ops.spawn(self.seal()))
        self.export_button.clicked.connect(lambda _checked=False: self.open_export_dialog())
        self.verify_button.clicked.connect(lambda _checked=False: self.open_verify_dialog())
        self.empty.action.clicked.connect(self._clear_filters)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        ops.changed.connect(self._on_changes)
        self._update_count()

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Ask the ledger for what the filters select; keep the selected packet selected."""
        generation = self._generation = self._reads.begin()
        stella = self.session.require()
        where = self.filters.where()
        try:
            ledger = await self.ops.run(
                lambda _report: read_ledger(stella, where), label="Loading evidence"
            )
        except OpFailed:
            return  # presented by the window's banner
        finally:
            self._reads.end()
        if generation != self._generation:
            await self._reads.settle(generation)  # a newer read: its result is the answer
            return
        self._reads.land(generation)
        self._loaded_once = True
        selected = self.selected_packet()
        self.checkpoint = ledger.checkpoint
        # The reset drops the selection for a moment: keep the packet shown while it comes back.
        self._restoring = True
        try:
            self.model.set_packets(ledger.packets, ledger.owners)
            kept = selected is not None and self.select_packet(selected.id, clear_search=False)
        finally:
            self._restoring = False
        self.filters.set_known(
            (p.release for p in ledger.packets if p.release),
            (p.environment for p in ledger.packets if p.environment),
            (p.actor for p in ledger.packets),
        )
        if not kept:
            self.detail.show_hint(self._detail_hint())
        self._update_count()
        self.loaded.emit()

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        # Off screen, the next showEvent reads the ledger anyway.
        if changes.touches(Change.PERSON) or (
            changes.touches(Change.EVIDENCE) and self.isVisible()
        ):
            self.ops.spawn(self.refresh())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        # Runs end and decisions are made elsewhere: coming back shows what they added.
        if self._loaded_once and self.session.ready:
            self.ops.spawn(self.refresh())

    # --- selection and detail --------------------------------------------------------------
    def selected_packet(self) -> PacketRow | None:
        index = self.view.currentIndex()
        packet = index.data(PacketRole) if index.isValid() else None
        return packet if isinstance(packet, PacketRow) else None

    def select_packet(self, packet_id: UUID, *, clear_search: bool = True) -> bool:
        row = self.model.row_of(packet_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            if not clear_search:
                return False
            self.search.clear()  # hidden by the search: the person asked for this packet
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.view.selectionModel().setCurrentIndex(index, flags)
        self.view.scrollTo(index)
        return True

    def _on_current(
        self, current: QModelIndex | QPersistentModelIndex, _previous: object = None
    ) -> None:
        packet = current.data(PacketRole) if current.isValid() else None
        if not isinstance(packet, PacketRow):
            if not self._restoring:
                self.detail.show_hint(self._detail_hint())
            return
        shown = self.detail.detail
        if shown is not None and shown.get("id") == str(packet.id):
            return
        self.ops.spawn(self.show_packet(packet))

    async def show_packet(self, packet: PacketRow) -> dict[str, Any] | None:
        """Fetch one packet decoded and checked, and show it (unless another was chosen since)."""
        self._detail_generation += 1
        generation = self._detail_generation
        stella = self.session.require()
        self.detail.show_loading(packet.seq)
        try:
            detail: dict[str, Any] = await self.ops.run(
                lambda _report: stella.evidence.get(packet.id),
                label=f"Reading packet #{packet.seq}",
            )
        except OpFailed as exc:
            if generation == self._detail_generation:
                self.detail.show_hint(f"Packet #{packet.seq} could not be read: {exc.message}")
            return None
        if generation != self._detail_generation:
            return None
        self.detail.show_packet(detail)
        return detail

    def _detail_hint(self) -> str:
        if self.proxy.rowCount() == 0:
            return ""
        return (
            "Select a packet to see whether it verifies, who signed it, where it sits in the "
            "chain and what it claims."
        )

    # --- actions ---------------------------------------------------------------------------
    async def replay(self, packet_id: UUID) -> dict[str, Any] | None:
        stella = self.session.require()
        self.detail.show_replaying()
        try:
            result: dict[str, Any] = await self.ops.run(
                lambda _report: stella.evidence.replay(packet_id),
                label="Replaying the packet",
                present_errors=False,  # shown in place, under the packet it is about
            )
        except OpFailed as exc:
            if self._showing(packet_id):
                self.detail.show_replay_error(exc.message)
            return None
        if self._showing(packet_id):
            self.detail.show_replay(result)
        return result

    def _showing(self, packet_id: UUID) -> bool:
        shown = self.detail.detail
        return shown is not None and shown.get("id") == str(packet_id)

    async def seal(self) -> CheckpointRow | None:
        stella = self.session.require()
        self.seal_button.setEnabled(False)
        try:
            checkpoint = await self.ops.run(
                lambda _report: stella.evidence.checkpoint(), label="Sealing the ledger"
            )
        except OpFailed:
            return None  # presented by the window's banner
        finally:
            self.seal_button.setEnabled(True)
        self.checkpoint = checkpoint
        self.status_message.emit(
            f"Sealed: checkpoint {checkpoint.tree_size} covers packets "
            f"#1 to #{checkpoint.tree_size}"
        )
        self._update_count()
        packet = self.selected_packet()
        if packet is not None:
            await self.show_packet(packet)  # its "sealed by" line changed
        return checkpoint

    def export_choice(self) -> ExportChoice:
        """The dialog's starting point: the filter's release or time range, else the selected
        packet's release or run."""
        where = self.filters.where()
        packet = self.selected_packet()
        release = where.release or (packet.release if packet else None) or ""
        run_id = packet.run_id if packet else None
        if where.release:
            kind = RELEASE
        elif where.since is not None:
            kind = RANGE
        elif packet is not None and packet.release:
            kind = RELEASE
        elif run_id is not None:
            kind = RUN
        else:
            kind = RANGE
        return ExportChoice(kind, release, run_id, where.since, where.until)

    def open_export_dialog(self) -> ExportDialog:
        if self.export_dialog is not None and self.export_dialog.isVisible():
            self.export_dialog.raise_()
            return self.export_dialog
        releases = sorted({p.release for p in self.model.packets() if p.release})
        dialog = ExportDialog(
            self.ops, self.session, self.export_choice(), releases=releases, parent=self
        )
        dialog.exported.connect(self._on_exported)
        dialog.verify_requested.connect(self.open_verify_dialog)
        self.export_dialog = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        return dialog

    def _on_exported(self, result: Mapping[str, Any]) -> None:
        self.status_message.emit(
            f"Exported {result['packets']} packets to {result['out']} ({result['digest']})"
        )
        # An export seals what it exports when no checkpoint covered it yet.
        self.ops.spawn(self.refresh())

    def open_verify_dialog(self, path: Path | None = None) -> VerifyDialog:
        if self.verify_dialog is not None and self.verify_dialog.isVisible():
            if path is not None:
                self.verify_dialog.path.setText(str(path))
            self.verify_dialog.raise_()
            return self.verify_dialog
        dialog = VerifyDialog(self.ops, path, parent=self)
        self.verify_dialog = dialog
        dialog.open()
        return dialog

    # --- filters and counts ----------------------------------------------------------------
    def _on_search(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_count()
        if not self.view.currentIndex().isValid():
            self.detail.show_hint(self._detail_hint())

    def _clear_filters(self) -> None:
        if self.model.rowCount() and self.proxy.terms:
            self.search.clear()
        else:
            self.filters.clear()

    def _update_count(self) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        filtered = self.filters.active()
        if total == 0 and not filtered:
            self.empty.say(
                "No evidence yet",
                "Every workflow run that ends adds a signed run packet, and every promotion "
                "decision, approval, deployment, rollback and drift check adds its own. Start a "
                "run on the Runs page, then come back here.",
            )
        elif total == 0:
            self.empty.say(
                "No packets match these filters",
                "Nothing in the ledger has the type, release, environment, person and time "
                "chosen above.",
                "Clear filters",
            )
        elif shown == 0:
            self.empty.say(
                "No packet matches the search",
                f"None of the {total:,} packets loaded mention “{' '.join(self.proxy.terms)}”.",
                "Clear the search",
            )
        self.list_stack.setCurrentWidget(self.view if shown else self.empty)
        noun = "packet" if total == 1 else "packets"
        if total == 0:
            text = ""
        elif self.proxy.terms:
            text = f"{shown:,} of {total:,} {noun} match"
        else:
            text = f"{total:,} {noun}" + (" match the filters" if filtered else "")
        seal = self.checkpoint
        sealed = (
            f"Sealed up to #{seal.tree_size} ({local_time(seal.created_at)}, {seal.created_by})"
            if seal is not None
            else "Not sealed yet: Seal now signs a checkpoint over the ledger"
        )
        self.count.setText(f"{text} · {sealed}" if text else sealed)
