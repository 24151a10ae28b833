"""The Releases page: filterable list on the left, the selected release's digests on the right."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from stella_core.releases.model import Release
from stella_desk.chrome import PAGE_MARGINS, PageHeader, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops, Reads
from stella_desk.releases.create import CreateReleaseDialog
from stella_desk.releases.detail import ReleaseDetail
from stella_desk.releases.table import Column, ReleaseFilterProxy, ReleaseRole, ReleaseTableModel
from stella_desk.session import Session
from stella_desk.tables import record_view

COLUMN_WIDTHS = {
    Column.NAME: 240,
    Column.CREATED: 160,
    Column.CREATED_BY: 150,
    Column.COMPONENTS: 110,
}


class ReleaseBrowser(QWidget):
    loaded = Signal()  # after every (re)load of the list

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.model = ReleaseTableModel(self)
        self.proxy = ReleaseFilterProxy(self.model, self)
        self.dialog: CreateReleaseDialog | None = None
        self._generation = 0  # a newer load supersedes an older one still in flight
        self._reads = Reads()

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(12)
        header = PageHeader(
            "Releases", "Immutable sets of components, each pinned to a sha256 digest."
        )
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: name, creator, component, tag or digest")
        self.filter.setClearButtonEnabled(True)
        self.filter.setMinimumWidth(320)
        self.new_button = QPushButton("New release")
        self.new_button.setProperty("kind", "primary")
        header.action_row.addWidget(self.filter)
        header.action_row.addWidget(self.new_button)
        page.addWidget(header)

        self.view = record_view(self.proxy, column_widths=COLUMN_WIDTHS, sort_column=Column.CREATED)

        self.count = label(kind="muted")
        top = QWidget()
        top_box = QVBoxLayout(top)
        top_box.setContentsMargins(0, 0, 0, 0)
        top_box.setSpacing(6)
        top_box.addWidget(self.view, 1)
        top_box.addWidget(self.count)

        # Below the list, not beside it: a full 71-character digest needs the width.
        self.detail = ReleaseDetail()
        bottom = QWidget()
        bottom_box = QVBoxLayout(bottom)
        bottom_box.setContentsMargins(0, 10, 0, 0)
        bottom_box.addWidget(self.detail)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([330, 270])  # starting split; the stretch factors keep the ratio
        page.addWidget(splitter, 1)

        self.filter.textChanged.connect(self._on_filter)
        self.new_button.clicked.connect(self.open_create_dialog)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self.proxy.modelReset.connect(self._update_count)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.layoutChanged.connect(self._update_count)
        ops.changed.connect(self._on_changes)
        self._update_count()

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Fetch the list once; keep the selected release selected."""
        generation = self._generation = self._reads.begin()
        stella = self.session.require()
        try:
            releases = await self.ops.run(
                lambda _report: stella.releases.list_releases(), label="Loading releases"
            )
        except OpFailed:
            return  # presented by the window's banner
        finally:
            self._reads.end()
        if generation != self._generation:
            await self._reads.settle(generation)  # a newer read: its result is the answer
            return
        self._reads.land(generation)
        selected = self.selected_release()
        self.model.set_releases(releases)
        if selected is None or not self.select_release(selected.name):
            self.detail.show_release(None)
        self.loaded.emit()

    def _on_changes(self, changes: OpChanges) -> None:
        # The initiator already placed its release in the model; no need to fetch the list again.
        if changes.initiator is self or not self.session.ready:
            return
        if changes.touches(Change.RELEASES, Change.PERSON):
            self.ops.spawn(self.refresh())

    # --- selection -------------------------------------------------------------------------
    def selected_release(self) -> Release | None:
        index = self.view.currentIndex()
        return index.data(ReleaseRole) if index.isValid() else None

    def select_release(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            # Hidden by the filter: the person asked for this release, so show it.
            self.filter.clear()
            index = self.proxy.mapFromSource(self.model.index(row, 0))
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.view.selectionModel().setCurrentIndex(index, flags)
        self.view.scrollTo(index)
        return True

    def show_release(self, release: Release) -> None:
        """A release made here: add it without a reload and select it."""
        self.model.add_release(release)
        self.select_release(release.name)

    def _on_current(
        self, current: QModelIndex | QPersistentModelIndex, _previous: object = None
    ) -> None:
        release = current.data(ReleaseRole) if current.isValid() else None
        if release is not self.detail.release:
            self.detail.show_release(release)

    # --- filter ----------------------------------------------------------------------------
    def _on_filter(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_count()
        if not self.view.currentIndex().isValid():
            self.detail.show_release(None)

    def _update_count(self) -> None:
        total = self.model.rowCount()
        shown = self.proxy.rowCount()
        if total == 0:
            self.count.setText("No releases yet. Create one with New release.")
        elif self.proxy.terms:
            self.count.setText(f"{shown:,} of {total:,} releases match")
        else:
            self.count.setText(f"{total:,} release{'s' if total != 1 else ''}")

    # --- creating --------------------------------------------------------------------------
    def open_create_dialog(self) -> CreateReleaseDialog:
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.raise_()
            return self.dialog
        dialog = CreateReleaseDialog(self.ops, self.session, initiator=self, parent=self)
        dialog.created.connect(self.show_release)
        self.dialog = dialog
        dialog.open()  # window-modal but asynchronous: the loop keeps running
        self.ops.spawn(dialog.load())
        return dialog
