"""Help: what each page is for, the words the desk uses, the keyboard shortcuts, and About.

Plain text kept here, next to the code that shows it; opened with `open()` (never `exec()`)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QPushButton,
    QTabWidget,
    QTextBrowser,
    QWidget,
)

from stella_desk.chrome import dialog_layout

PAGE_HELP: dict[str, str] = {
    "dashboard": "What runs where, what waits for a decision, and what happened lately.",
    "releases": (
        "Releases: immutable sets of component → digest. Tags are resolved once, when a release "
        "is created; everything after uses the digests."
    ),
    "workflows": (
        "The workflow editor: steps and the order they run in, drawn on a canvas. Save stores a "
        "new version; the library on the left renames and deletes workflows."
    ),
    "runs": "Workflow runs: start one, watch its steps and log live, retry or cancel.",
    "promotions": (
        "The pipeline: each environment with the release it runs and the promotions moving into "
        "it. Promote… asks for a release to go into an environment."
    ),
    "approvals": (
        "Your inbox: the promotions waiting for your decision, with what each changes (tag and "
        "digest), its gates and the approvals so far. The number beside Approvals counts them."
    ),
    "history": (
        "Every promotion: where it went, who asked, its status, when it was decided and by whom. "
        "Filter it, and open one for its approvals, gates and run."
    ),
    "evidence": (
        "The signed ledger of every decision. Export a capsule for an auditor and verify one "
        "offline: 'passed' is green only when keys you chose vouch for the signers."
    ),
    "targets": (
        "Agents and their health, every environment's targets, what should run on each, the "
        "sticker read on demand and drift. Admins enroll agents (a one-time command) and revoke."
    ),
    "admin": (
        "Administration: environments and their signed policy, freezes, registries, "
        "components and people (what your role may change)."
    ),
    "settings": "Where the desk keeps its data: the embedded database or a shared PostgreSQL.",
}

TERMS: list[tuple[str, str]] = [
    ("Release", "A named, immutable set of components, each pinned by its sha256 digest."),
    ("Digest", "The content address of an image (sha256:…): what actually runs."),
    ("Tag", "A movable name for an image (1.4.2, latest); shown beside digests as a reminder."),
    ("Environment", "A place releases go (dev, stage, prod), in promotion order."),
    ("Promotion", "A request for a release to go into an environment, decided by its gates."),
    ("Gate", "A check a promotion must pass: freeze window, previous environment, approvals."),
    (
        "Separation of duties",
        "Where an environment asks for it, the person who requested a promotion cannot approve it.",
    ),
    ("Workflow", "The steps a deployment runs, and their order; stored in versions."),
    ("Run", "One execution of a workflow version."),
    ("Person", "Someone who acts at the desk: a login, a role and a signing key."),
    ("Evidence", "Signed, hash-chained records of every decision, approval and run."),
    ("Capsule", "An exported archive of evidence that verifies offline, without the database."),
]


def shortcut_rows(pages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(keys, what they do): the page shortcuts first, then the rest."""
    rows = [(page_key(i), f"Go to {title}") for i, (_key, title) in enumerate(pages) if i < 10]
    rows += [
        ("↑ / ↓ in the navigation", "Move between pages (Tab reaches the navigation)"),
        ("F1", "This help"),
        ("Ctrl+Q", "Quit"),
        ("Ctrl+S", "Save the workflow as a new version (Workflows)"),
        ("Ctrl+Z", "Undo (Workflows)"),
        ("Ctrl+Y or Ctrl+Shift+Z", "Redo (Workflows)"),
        ("Ctrl+C / Ctrl+V", "Copy and paste steps (Workflows)"),
        ("Delete", "Delete the selected steps (Workflows)"),
        ("Ctrl+L", "Arrange the steps in layers (Workflows)"),
        ("Ctrl++ / Ctrl+-", "Zoom the canvas (Workflows)"),
    ]
    return rows


def page_key(index: int) -> str:
    """Ctrl+1 … Ctrl+9 for the first nine pages, Ctrl+0 for the tenth."""
    return f"Ctrl+{(index + 1) % 10}"


def _html_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td style='padding:4px 14px 4px 0; white-space:nowrap'><b>{a}</b></td>"
        f"<td style='padding:4px 0'>{b}</td></tr>"
        for a, b in rows
    )
    return f"<table cellspacing='0'>{body}</table>"


class HelpDialog(QDialog):
    def __init__(self, pages: list[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Stella Release Desk help")
        self.resize(720, 560)
        outer = dialog_layout(
            self,
            "Help",
            "What each page is for, the words the desk uses, and the keyboard shortcuts.",
        )
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        page_rows = [(title, PAGE_HELP.get(key, "")) for key, title in pages]
        self.pages = self._browser(_html_table(page_rows))
        self.terms = self._browser(_html_table(TERMS))
        self.shortcuts = self._browser(_html_table(shortcut_rows(pages)))
        self.tabs.addTab(self.pages, "Pages")
        self.tabs.addTab(self.terms, "Key terms")
        self.tabs.addTab(self.shortcuts, "Keyboard shortcuts")
        outer.addWidget(self.tabs, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        close = QPushButton("Close")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        row.addWidget(close)
        outer.addLayout(row)

    @staticmethod
    def _browser(html: str) -> QTextBrowser:
        browser = QTextBrowser()
        browser.setOpenExternalLinks(False)
        browser.setHtml(html)
        browser.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        return browser

    def show_tab(self, name: str) -> None:
        index = {"pages": 0, "terms": 1, "shortcuts": 2}[name]
        self.tabs.setCurrentIndex(index)


class AboutDialog(QDialog):
    def __init__(self, version: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Stella Release Desk")
        self.setMinimumWidth(440)
        outer = dialog_layout(
            self,
            "Stella Release Desk",
            f"{version + ' · ' if version else ''}A release control plane for container estates "
            "that are not Kubernetes: digest-first releases, promotions decided by gates and "
            "people, and signed evidence that verifies offline.",
        )
        row = QHBoxLayout()
        row.addStretch(1)
        close = QPushButton("Close")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        row.addWidget(close)
        outer.addLayout(row)
