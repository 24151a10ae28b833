"""The Approvals page: the promotions this person may decide, newest first, and the selected one's
case (what it changes, its digests, gates and approvals) with Approve and Reject.

The inbox is the core's (`promotions.inbox()`): it leaves out what this person requested where
separation of duties applies, what they decided already and environments their role may not
approve. The page reads it again when it is shown, after every decision, when the person
switches, when another process changes a promotion (the change feed), and every `POLL_MS` while
it is on screen only when those changes are not heard (others request and decide meanwhile).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from uuid import UUID

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import QSplitter, QStackedWidget, QVBoxLayout, QWidget

from stella_core.tenancy.model import ProductRole
from stella_desk.approvals.detail import Case, CaseView, read_case
from stella_desk.approvals.table import Column, InboxModel, PromotionRole
from stella_desk.chrome import PAGE_MARGINS, EmptyState, PageHeader, label
from stella_desk.ops import Change, OpChanges, OpFailed, Ops, Reads
from stella_desk.promotions.decide import DecisionBar
from stella_desk.promotions.status import status_text
from stella_desk.session import Session
from stella_desk.tables import TextFilterProxy, record_view

if TYPE_CHECKING:
    from stella_core.promotions.model import Promotion

POLL_MS = 5000
# While the page is not on screen, only the number waiting is read, for the navigation's badge.
BADGE_POLL_MS = 10000

COLUMN_WIDTHS = {
    Column.RELEASE: 116,
    Column.ENVIRONMENT: 52,
    Column.STATUS: 162,
}

NOTHING_WAITS = (
    "Requesters never see their own promotions where separation of duties applies, and nobody "
    "sees a promotion twice: once you have decided, it leaves your inbox."
)
ROLE_NOTES = {
    ProductRole.RELEASE_MANAGER: (
        " As a release manager you request promotions (Promote… on the Promotions page); "
        "approvers and admins decide them."
    ),
    ProductRole.AUDITOR: " As an auditor you read every decision (Evidence) but take none.",
}


def empty_text(role: ProductRole | None) -> str:
    return NOTHING_WAITS + (ROLE_NOTES.get(role, "") if role is not None else "")


class ApprovalsPage(QWidget):
    loaded = Signal()  # after every (re)load of the inbox
    status_message = Signal(str)
    pending_changed = Signal(int)  # how many promotions wait for this person's decision

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        self.model = InboxModel(self)
        self.proxy = TextFilterProxy(self.model, self)
        self._generation = 0
        self._reads = Reads()
        self._case_generation = 0
        self._case_wanted: UUID | None = None  # the case being read now
        self._restoring = False
        self._loading = False
        self._loaded_once = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)
        self.pending = 0
        self._counting = False
        self._badge_timer = QTimer(self)
        self._badge_timer.setInterval(BADGE_POLL_MS)
        self._badge_timer.timeout.connect(self._badge_tick)

        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(10)
        page.addWidget(
            PageHeader("Approvals", "Promotions waiting for your decision, newest first.")
        )

        self.view = record_view(
            self.proxy, column_widths=COLUMN_WIDTHS, sort_column=Column.REQUESTED, row_height=32
        )
        # Sorted by it, shown in each row's tooltip: the pane keeps its width for the case
        # (whose digests are shown whole). Who asked is in the tooltip and the case too.
        self.view.hideColumn(Column.REQUESTED)
        self.view.hideColumn(Column.BY)
        self.view.hideColumn(Column.PROGRESS)  # the Status column says "· 1 of 2"
        self.view.setMinimumWidth(300)
        self.count = label(kind="muted")
        left = QWidget()
        left_box = QVBoxLayout(left)
        left_box.setContentsMargins(0, 0, 0, 0)
        left_box.setSpacing(6)
        left_box.addWidget(self.view, 1)
        left_box.addWidget(self.count)

        self.case_view = CaseView()
        self.decision = DecisionBar(ops, session)
        self.decision.setEnabled(False)
        right = QWidget()
        right_box = QVBoxLayout(right)
        right_box.setContentsMargins(8, 0, 0, 0)
        right_box.setSpacing(8)
        right_box.addWidget(self.case_view, 1)
        right_box.addWidget(self.decision)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([335, 685])

        self.empty = EmptyState()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.splitter)
        self.stack.addWidget(self.empty)
        page.addWidget(self.stack, 1)

        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self.decision.decided.connect(self._on_decided)
        self.case_view.copied.connect(lambda text: self.status_message.emit(f"Copied {text}"))
        ops.changed.connect(self._on_changes)
        self._show_empty()

    # --- loading ---------------------------------------------------------------------------
    async def refresh(self) -> list[Promotion] | None:
        """Read the inbox; keep the selected promotion selected (else select the newest)."""
        generation = self._generation = self._reads.begin()
        stella = self.session.require()
        self._loading = True
        try:
            promotions = await self.ops.run(
                lambda _report: stella.promotions.inbox(), label="Reading your approvals"
            )
        except OpFailed:
            return None  # presented by the window's banner
        finally:
            self._reads.end()
            self._loading = False
        if generation != self._generation:
            await self._reads.settle(generation)  # a newer read: its result is the answer
            return list(self.model.promotions())
        self._reads.land(generation)
        self._loaded_once = True
        selected = self.selected_promotion()
        # The selection is put back here; the case is (re)read below, once, only if needed.
        self._restoring = True
        try:
            if promotions != list(self.model.promotions()):
                self.model.set_promotions(promotions)  # a reset: only when the inbox changed
            keep = selected.id if selected is not None else None
            if keep is None or self.model.row_of(keep) is None:
                keep = self.model.promotion_at(0).id if promotions else None
            if keep is not None:
                self.select_promotion(keep)
        finally:
            self._restoring = False
        if keep is not None:
            fresh = self.model.promotion_at(self.model.row_of(keep) or 0)
            shown = self.case_view.case
            # Not shown yet, another one shown, or decided by someone else meanwhile.
            stale = shown is None or shown.promotion != fresh
            if stale and self._case_wanted != keep:
                self.ops.spawn(self.show_case(keep))
        else:
            self.case_view.show_hint("")
            self.decision.set_promotion(None)
            self.decision.setEnabled(False)
        self._show_empty()
        self._schedule()
        self._set_pending(len(promotions))
        self.loaded.emit()
        return promotions

    async def count_pending(self) -> int | None:
        """Read how many promotions wait for this person (the badge), nothing else."""
        stella = self.session.stella
        if stella is None or self._counting:
            return None
        self._counting = True
        try:
            found = await self.ops.run(
                lambda _report: len(stella.promotions.inbox()),
                label="Counting your approvals",
                present_errors=False,  # a missed count is retried at the next tick
            )
        except OpFailed:
            return None
        finally:
            self._counting = False
        self._set_pending(found)
        return found

    def _set_pending(self, count: int) -> None:
        if count != self.pending:
            self.pending = count
            self.pending_changed.emit(count)

    def _badge_tick(self) -> None:
        if self.isVisible() or self._loading or not self.session.ready:
            return  # on screen, the inbox's own poll keeps the count
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._badge_timer.stop()
            return
        self.ops.spawn(self.count_pending())

    def _show_empty(self) -> None:
        total = self.model.rowCount()
        identity = self.session.identity
        self.empty.say("Nothing waits for you", empty_text(identity.role if identity else None))
        self.stack.setCurrentWidget(self.splitter if total else self.empty)
        self.count.setText(
            f"{total} promotion{'s' if total != 1 else ''} waiting for you" if total else ""
        )

    def empty_message(self) -> str:
        return self.empty.text.text() if self.stack.currentWidget() is self.empty else ""

    def _schedule(self) -> None:
        # Polled only while nothing is heard: with the change feed live, a request or a
        # decision made anywhere reaches refresh() through ops.changed.
        polling = self.session.ready and not self.session.live
        if polling and not self._badge_timer.isActive():
            self._badge_timer.start()
        elif not polling:
            self._badge_timer.stop()
        if self.isVisible() and self.session.ready and not self.session.live:
            if not self._timer.isActive():
                self._timer.start()
        else:
            self._timer.stop()

    def _tick(self) -> None:
        if self._loading or not self.isVisible() or not self.session.ready:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the loop has ended (shutdown)
            self._timer.stop()
            return
        self.ops.spawn(self.refresh())

    def _on_changes(self, changes: OpChanges) -> None:
        if not self.session.ready:
            return
        if changes.touches(Change.PERSON):
            self.case_view.show_hint("")  # the next person's inbox, not this one's leftovers
            self.decision.set_promotion(None)
            self.ops.spawn(self.refresh())
        elif changes.touches(Change.PROMOTIONS) and changes.initiator is not self.decision:
            self.ops.spawn(self.refresh())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._loaded_once and self.session.ready:
            self.ops.spawn(self.refresh())
        self._schedule()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    # --- selection and the case ------------------------------------------------------------
    def selected_promotion(self) -> Promotion | None:
        index = self.view.currentIndex()
        found = index.data(PromotionRole) if index.isValid() else None
        return found if found is not None else None

    def select_promotion(self, promotion_id: UUID) -> bool:
        row = self.model.row_of(promotion_id)
        if row is None:
            return False
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
        promotion = current.data(PromotionRole) if current.isValid() else None
        if promotion is None or self._restoring:
            return
        shown = self.case_view.case
        if self._case_wanted == promotion.id or (
            shown is not None and shown.promotion.id == promotion.id
        ):
            return
        self.ops.spawn(self.show_case(promotion.id))

    async def show_case(self, promotion_id: UUID) -> Case | None:
        """Read one promotion's case and show it (unless another was chosen since)."""
        self._case_generation += 1
        generation = self._case_generation
        stella = self.session.require()
        self._case_wanted = promotion_id
        self.case_view.show_loading("the promotion")
        row = self.model.row_of(promotion_id)
        requester = self.model.promotion_at(row).requested_by if row is not None else None
        self.decision.set_promotion(promotion_id, requester)
        self.decision.setEnabled(True)
        try:
            case = await self.ops.run(
                lambda _report: read_case(stella, promotion_id),
                label="Reading the promotion",
                present_errors=False,
            )
        except OpFailed as exc:
            if generation == self._case_generation:
                self._case_wanted = None
                self.case_view.show_hint(f"The promotion could not be read: {exc.message}")
            return None
        if generation != self._case_generation:
            return None
        self._case_wanted = None
        self.case_view.show_case(case)
        return case

    # --- deciding --------------------------------------------------------------------------
    def _on_decided(self, promotion: Promotion) -> None:
        self.case_view.update_status(promotion)
        verb = "Rejected" if promotion.status.value == "rejected" else "Approved"
        self.status_message.emit(
            f"{verb} {promotion.release} into {promotion.environment}: "
            f"{promotion.progress()} approvals, {status_text(promotion.status.value)}"
        )
        self.ops.spawn(self.refresh())
