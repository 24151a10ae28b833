"""Verify archive: a decision capsule checked offline, as an auditor would, with no database.

The archive is read and checked on a worker thread by the same code as `stella evidence verify`
(`read_tar` and `verify_capsule`). The result lists the four checks with how much each covered
and whether it passed, then every problem with the packet it is about. Replay re-evaluates the
archive's packets from the inputs it carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stella_core.crypto.keys import PublicKey
from stella_core.errors import DefinitionError
from stella_core.evidence.capsule import read_tar
from stella_core.evidence.service import replay_capsule
from stella_core.evidence.verify import CHECKS, Report, verify_capsule
from stella_core.promotions.decision import replay as replay_decision
from stella_desk import humane
from stella_desk.chrome import InlineError, dialog_buttons, dialog_layout, label
from stella_desk.evidence.detail import BAD, GOOD, pill, set_pill, short_value
from stella_desk.ops import OpFailed, Ops
from stella_desk.theme import mono_font

CHECK_NAMES = {
    "signatures": ("Signatures", "each packet's DSSE signature against a trusted key"),
    "digests": ("Digests", "each file against SHA256SUMS, each referenced input present"),
    "chain": ("Chain", "every link recomputes and follows the one before it"),
    "checkpoints": ("Checkpoints", "the signed checkpoint and each packet's inclusion proof"),
}
MUTED = "#687086"
# Valid signatures by keys the archive brought itself: consistent, but vouched for by nobody the
# auditor chose. Amber, never green: anyone who rewrites an archive can re-sign it.
UNTRUSTED = ("#a15c04", "#fdf1dc")
UNTRUSTED_WORDS = "signatures valid, signers not trusted"
UNTRUSTED_EXPLAINED = (
    "Every signature checks out, but against the keys the archive carries: whoever could change "
    "the archive could also have signed it with keys of their own. Add the public keys you "
    "obtained yourself (from your organisation, not from this archive) under Trusted keys and "
    "verify again to know who signed."
)


# --- worker-thread functions (called inside `ops.run`) ---------------------------------------
def trusted_keys(paths: Sequence[Path]) -> list[PublicKey]:
    keys = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DefinitionError(f"cannot read the key file {path}: {exc.strerror}") from exc
        keys.append(PublicKey.from_pem(data))
    return keys


def verify_archive(path: Path, key_paths: Sequence[Path]) -> Report:
    keys = trusted_keys(key_paths)
    return verify_capsule(read_tar(path), keys or None)


def replay_archive(path: Path, key_paths: Sequence[Path]) -> dict[str, Any]:
    keys = trusted_keys(key_paths)
    return replay_capsule(read_tar(path), keys or None, None, decisions=replay_decision)


def check_results(report: Report) -> list[tuple[str, int, int]]:
    """(check, how many things it checked, how many problems it found), in the report's order."""
    return [
        (check, report.checked.get(check, 0), sum(1 for p in report.problems if p.check == check))
        for check in CHECKS
    ]


def packet_words(packet: str | None) -> str:
    """A packet as the problems list names it: a packet id shortened (the full one is in the
    tooltip), a sequence number as it is ("seq 3")."""
    if not packet:
        return "the archive"
    try:
        return f"packet {humane.short_id(UUID(packet))}"
    except ValueError:
        return packet


def read_only_table(headers: Sequence[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().hide()
    table.setShowGrid(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    head = table.horizontalHeader()
    head.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    head.setHighlightSections(False)
    head.setStretchLastSection(True)
    return table


def cell(text: str, colour: str | None = None, *, bold: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setToolTip(text)
    if colour is not None:
        item.setForeground(QColor(colour))
    if bold:
        font = item.font()
        font.setBold(True)
        item.setFont(font)
    return item


class VerifyDialog(QDialog):
    def __init__(self, ops: Ops, path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        self.report: Report | None = None
        # What the shown result is about: the archive and the keys it was verified with. A
        # result never outlives a change of either (a new archive is a new question).
        self.verified_with: tuple[Path, tuple[Path, ...]] | None = None
        self.replayed: dict[str, Any] | None = None
        self._generation = 0
        self._busy = False
        self.file_dialog: QFileDialog | None = None
        self.setWindowTitle("Verify archive")
        self.setMinimumWidth(760)

        outer = self._outer = dialog_layout(
            self,
            "Verify archive",
            (
                "Check a decision capsule offline: every signature, every file and input digest, "
                "the ledger's chain and the signed checkpoint. Nothing is read from the database."
            ),
        )

        outer.addWidget(label("ARCHIVE", "section"))
        row = QHBoxLayout()
        self.path = QLineEdit(str(path) if path else "")
        self.path.setPlaceholderText(
            "a capsule .tar, from Export capsule or 'stella evidence export'"
        )
        self.choose_button = QPushButton("Choose…")
        row.addWidget(self.path, 1)
        row.addWidget(self.choose_button)
        outer.addLayout(row)

        outer.addWidget(label("TRUSTED KEYS (OPTIONAL)", "section"))
        row = QHBoxLayout()
        self.keys = QListWidget()
        self.keys.setObjectName("trustedKeys")
        self.keys.setFixedHeight(54)
        self.keys.setToolTip("Public keys (PEM) you obtained yourself, not from the archive")
        keys_buttons = QVBoxLayout()
        keys_buttons.setSpacing(4)
        self.add_key_button = QPushButton("Add key…")
        self.remove_key_button = QPushButton("Remove")
        keys_buttons.addWidget(self.add_key_button)
        keys_buttons.addWidget(self.remove_key_button)
        keys_buttons.addStretch(1)
        row.addWidget(self.keys, 1)
        row.addLayout(keys_buttons)
        outer.addLayout(row)
        hint = label(
            "Without trusted keys, the keys the archive carries are used, and the result says so.",
            "muted",
        )
        hint.setWordWrap(True)
        outer.addWidget(hint)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # the check gives no steps: it is one call
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.hide()
        outer.addWidget(self.progress)

        self.results = QWidget()
        box = QVBoxLayout(self.results)
        box.setContentsMargins(0, 6, 0, 0)
        box.setSpacing(8)
        heading = QHBoxLayout()
        heading.setSpacing(10)
        self.verdict = pill("", GOOD)
        self.summary = label("", selectable=True)
        self.summary.setWordWrap(True)
        heading.addWidget(self.verdict, 0, Qt.AlignmentFlag.AlignVCenter)
        heading.addWidget(self.summary, 1)
        box.addLayout(heading)
        self.trust = label("", "muted")
        self.trust.setWordWrap(True)
        box.addWidget(self.trust)
        self.checks = read_only_table(["Check", "What it covers", "Checked", "Result"])
        self.checks.setRowCount(len(CHECKS))
        self.checks.setWordWrap(False)
        self.checks.verticalHeader().setDefaultSectionSize(28)
        self.checks.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        head = self.checks.horizontalHeader()
        head.resizeSection(0, 120)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        head.setSectionResizeMode(3, QHeaderView.ResizeMode.Fixed)
        head.setStretchLastSection(False)
        head.resizeSection(2, 80)
        head.resizeSection(3, 110)
        box.addWidget(self.checks)
        self.problems_title = label("PROBLEMS", "section")
        box.addWidget(self.problems_title)
        self.problems = read_only_table(["Packet", "Check", "Message"])
        self.problems.setWordWrap(True)
        self.problems.setMinimumHeight(140)
        head = self.problems.horizontalHeader()
        head.resizeSection(0, 270)
        head.resizeSection(1, 100)
        box.addWidget(self.problems, 1)
        replay_row = QHBoxLayout()
        self.replay_button = QPushButton("Replay archive")
        self.replay_button.setToolTip(
            "Evaluate every packet again from the inputs the archive carries"
        )
        self.replay_text = label("", selectable=True)
        self.replay_text.setWordWrap(True)
        replay_row.addWidget(self.replay_button, 0, Qt.AlignmentFlag.AlignTop)
        replay_row.addWidget(self.replay_text, 1)
        box.addLayout(replay_row)
        self.results.hide()
        outer.addWidget(self.results)
        # Spare height goes to the problems table when there is one, else below everything.
        outer.addStretch(1)
        self._spare = outer.count() - 1

        self.status = label("", "muted")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.error_box = InlineError()
        self.error = self.error_box.text
        outer.addWidget(self.error_box)

        buttons, self.close_button, self.verify_button = dialog_buttons("Verify")
        self.close_button.setText("Close")
        outer.addLayout(buttons)

        self.close_button.clicked.connect(self.reject)
        self.verify_button.clicked.connect(lambda: self.ops.spawn(self.verify()))
        self.replay_button.clicked.connect(lambda: self.ops.spawn(self.replay()))
        self.choose_button.clicked.connect(self._choose_archive)
        self.add_key_button.clicked.connect(self._choose_keys)
        self.remove_key_button.clicked.connect(self._remove_key)
        self.path.textChanged.connect(lambda _t: self._question_changed())
        self.keys.model().rowsInserted.connect(lambda *_a: self._question_changed())
        self.keys.model().rowsRemoved.connect(lambda *_a: self._question_changed())
        self.keys.currentRowChanged.connect(lambda _r: self._update_buttons())
        self._update_buttons()

    # --- the form --------------------------------------------------------------------------
    def archive(self) -> Path | None:
        text = self.path.text().strip()
        return Path(text).expanduser() if text else None

    def key_paths(self) -> list[Path]:
        return [Path(self.keys.item(i).text()) for i in range(self.keys.count())]

    def add_keys(self, paths: Sequence[Path]) -> None:
        known = set(self.key_paths())
        for path in paths:
            if path not in known:
                self.keys.addItem(str(path))
        self._update_buttons()

    def _remove_key(self) -> None:
        row = self.keys.currentRow()
        if row >= 0:
            self.keys.takeItem(row)
        self._update_buttons()

    def _file_dialog(self, title: str, filters: str, mode: QFileDialog.FileMode) -> QFileDialog:
        # `open()`, not the static getters: those run a nested event loop (an `exec()`).
        dialog = QFileDialog(self, title)
        dialog.setFileMode(mode)
        dialog.setNameFilter(filters)
        self.file_dialog = dialog
        dialog.open()
        return dialog

    def _choose_archive(self) -> None:
        dialog = self._file_dialog(
            "Open a capsule",
            "Capsule archives (*.tar);;All files (*)",
            QFileDialog.FileMode.ExistingFile,
        )
        if self.archive() is not None:
            dialog.selectFile(self.path.text())
        dialog.fileSelected.connect(self.path.setText)

    def _choose_keys(self) -> None:
        dialog = self._file_dialog(
            "Trusted public keys",
            "PEM public keys (*.pem);;All files (*)",
            QFileDialog.FileMode.ExistingFiles,
        )
        dialog.filesSelected.connect(lambda chosen: self.add_keys([Path(c) for c in chosen]))

    def _question_changed(self) -> None:
        """Another archive or other keys: the result shown answered a different question, so it
        goes, and a check still running for the old one is ignored when it ends."""
        current = self.archive()
        wanted = (current, tuple(self.key_paths())) if current is not None else None
        if self.verified_with is not None and wanted != self.verified_with:
            self.clear_result()
        self._update_buttons()

    def clear_result(self) -> None:
        self._generation += 1
        self.report = None
        self.replayed = None
        self.verified_with = None
        self.results.hide()
        self.verdict.setText("")
        self.summary.setText("")
        self.trust.setText("")
        self.replay_text.setText("")
        self.problems.setRowCount(0)
        self.checks.clearContents()
        self._hide_error()
        # Say why the result went, so it does not look like a failure.
        self.status.setText("The archive or the keys changed: Verify to check again.")
        if not self._busy:
            self.progress.hide()

    def _update_buttons(self) -> None:
        self.verify_button.setEnabled(self.archive() is not None and not self._busy)
        self.replay_button.setEnabled(self.report is not None and not self._busy)
        self.remove_key_button.setEnabled(self.keys.currentRow() >= 0 and not self._busy)

    def _set_busy(self, busy: bool, message: str = "") -> None:
        self._busy = busy
        self.progress.setVisible(busy)
        self.status.setText(message)
        for widget in (self.path, self.choose_button, self.add_key_button):
            widget.setEnabled(not busy)
        self._update_buttons()

    # --- verifying -------------------------------------------------------------------------
    async def verify(self) -> Report | None:
        path = self.archive()
        if path is None or self._busy:
            return None
        keys = self.key_paths()
        self._generation += 1
        generation = self._generation
        self._hide_error()
        self._set_busy(True, f"Verifying {path.name} offline…")
        try:
            report = await self.ops.run(
                lambda _report: verify_archive(path, keys),
                label="Verifying the archive",
                present_errors=False,
            )
        except OpFailed as exc:
            self._set_busy(False)
            if generation == self._generation:
                self._show_error(exc.message)
            return None
        self._set_busy(False)
        if generation != self._generation:
            return None
        self.report = report
        self.replayed = None
        self.verified_with = (path, tuple(keys))
        self._show_report(report, path, trusted_by_auditor=bool(keys))
        self._update_buttons()
        return report

    def trusted(self) -> bool:
        """The result is green: every check passed and the signers were trusted by keys the
        auditor chose."""
        return (
            self.report is not None
            and self.report.ok
            and self.verified_with is not None
            and bool(self.verified_with[1])
        )

    def _show_report(self, report: Report, path: Path, *, trusted_by_auditor: bool) -> None:
        failed = {p.check for p in report.problems}
        packets = f"{report.packets} packet{'s' if report.packets != 1 else ''}"
        if report.ok and trusted_by_auditor:
            set_pill(self.verdict, "passed", GOOD)
            self.summary.setText(
                f"<b>All {len(CHECKS)} checks passed</b> · {packets} in {path.name}"
            )
        elif report.ok:
            set_pill(self.verdict, UNTRUSTED_WORDS, UNTRUSTED)
            self.summary.setText(
                f"<b>Consistent, but not yet trusted</b> · {packets} in {path.name}"
            )
        else:
            count = len(report.problems)
            set_pill(self.verdict, "failed", BAD)
            self.summary.setText(
                f"<b>{count} problem{'s' if count != 1 else ''} in {len(failed)} "
                f"check{'s' if len(failed) != 1 else ''}</b> · {packets} in {path.name}"
            )
        if trusted_by_auditor:
            self.trust.setText("Trust: the signers are trusted by the keys you added.")
        else:
            self.trust.setText(f"Trust: {UNTRUSTED_EXPLAINED}")
        for row, (check, checked, problems) in enumerate(check_results(report)):
            name, covers = CHECK_NAMES[check]
            if problems:
                result = cell(f"✗ {problems} problem{'s' if problems != 1 else ''}", BAD[0])
            elif checked and check in ("signatures", "checkpoints") and not trusted_by_auditor:
                result = cell("✓ valid", UNTRUSTED[0])
                result.setToolTip("valid against the archive's own keys: signers not trusted")
            elif checked:
                result = cell("✓ passed", GOOD[0])
            else:
                result = cell("nothing to check", MUTED)
            self.checks.setItem(row, 0, cell(name, bold=True))
            self.checks.setItem(row, 1, cell(covers, MUTED))
            self.checks.setItem(row, 2, cell(str(checked)))
            self.checks.setItem(row, 3, result)
        self.problems.setRowCount(len(report.problems))
        mono = mono_font(8.5)
        for row, problem in enumerate(report.problems):
            packet = cell(packet_words(problem.packet))
            packet.setToolTip(problem.packet or "the archive as a whole")
            packet.setData(Qt.ItemDataRole.UserRole, problem.packet)
            packet.setFont(mono)
            self.problems.setItem(row, 0, packet)
            self.problems.setItem(row, 1, cell(CHECK_NAMES[problem.check][0]))
            self.problems.setItem(row, 2, cell(problem.message, BAD[0]))
        self.problems.resizeRowsToContents()
        self.problems_title.setVisible(not report.ok)
        self.problems.setVisible(not report.ok)
        self._outer.setStretchFactor(self.results, 0 if report.ok else 1)
        self._outer.setStretch(self._spare, 1 if report.ok else 0)
        head_height = self.checks.horizontalHeader().sizeHint().height()
        rows = sum(self.checks.rowHeight(r) for r in range(self.checks.rowCount()))
        self.checks.setFixedHeight(head_height + rows + 2 * self.checks.frameWidth())
        self.replay_text.setText("")
        self.results.show()
        self.fit_contents()

    def check_results(self) -> list[tuple[str, int, bool]]:
        """What the checks table shows: (check, count, passed) per row."""
        rows = []
        for row in range(self.checks.rowCount()):
            name, count, result = (self.checks.item(row, c) for c in (0, 2, 3))
            if name is None or count is None or result is None:
                continue
            rows.append((name.text(), int(count.text()), result.text().startswith("✓")))
        return rows

    def problem_rows(self) -> list[tuple[str, str, str]]:
        """(packet as shown, check, message) per problem."""
        rows = []
        for row in range(self.problems.rowCount()):
            items = [self.problems.item(row, c) for c in range(3)]
            rows.append(tuple(i.text() if i is not None else "" for i in items))
        return rows  # type: ignore[return-value]

    def problem_packets(self) -> list[str | None]:
        """The full packet id (or label) each problem row is about."""
        found = []
        for row in range(self.problems.rowCount()):
            item = self.problems.item(row, 0)
            found.append(item.data(Qt.ItemDataRole.UserRole) if item is not None else None)
        return found

    # --- replaying -------------------------------------------------------------------------
    async def replay(self) -> dict[str, Any] | None:
        path = self.archive()
        if path is None or self._busy:
            return None
        keys = self.key_paths()
        self._set_busy(True, f"Replaying the packets of {path.name}…")
        try:
            result: dict[str, Any] = await self.ops.run(
                lambda _report: replay_archive(path, keys),
                label="Replaying the archive",
                present_errors=False,
            )
        except OpFailed as exc:
            self._set_busy(False)
            self._show_replay(f"Replay failed: {exc.message}", good=False)
            return None
        self._set_busy(False)
        self.replayed = result
        count = len(result.get("packets", []))
        differences = result.get("differences", [])
        unverified = result.get("unverified", [])
        if result.get("same"):
            every = f"all {count} packets" if count != 1 else "1 packet"
            self._show_replay(f"Replay: same outcome for {every}.", good=True)
        else:
            lines = []
            if unverified:
                lines.append(
                    f"Not replayed: {len(unverified)} packet(s) did not verify; replay trusts "
                    "only what verifies."
                )
            if differences:
                lines.append(f"Replay differs in {len(differences)} place(s):")
            elif count:
                lines.append(f"The other {count} packet(s) reach the same outcome.")
            lines.extend(
                f"• {d.get('packet')}: {d.get('kind')} {d.get('name')}: recorded "
                f"{short_value(d.get('recorded'))}, replayed {short_value(d.get('replayed'))}"
                for d in differences
            )
            self._show_replay("\n".join(lines), good=False)
        return result

    def _show_replay(self, text: str, *, good: bool) -> None:
        self.replay_text.setTextFormat(Qt.TextFormat.PlainText)
        self.replay_text.setStyleSheet(f"color: {GOOD[0] if good else BAD[0]};")
        self.replay_text.setText(text)
        self.fit_contents()

    # --- presentation ----------------------------------------------------------------------
    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error_box.show()
        self.fit_contents()

    def _hide_error(self) -> None:
        self.error.setText("")
        self.error_box.hide()

    def fit_contents(self) -> None:
        self._outer.activate()
        wanted = self.sizeHint().height()
        if self.height() < wanted:
            self.resize(self.width(), wanted)
