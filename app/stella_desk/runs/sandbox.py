"""Where script steps run: the notice the Runs page keeps above the list and the monitor while
scripts may run without a sandbox, or cannot run on this machine for want of one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import QFrame, QVBoxLayout, QWidget

from stella_desk import theme
from stella_desk.chrome import label

INSTALL = "apt-get install bubblewrap"
TURN_OFF = "stella workflow settings --unsandboxed off"
WHAT_LEAKS = "the Stella profiles, keys and database password"

# Danger looks like the error banner; a warning is amber.
NOTICE_STYLE = f"""
QFrame[kind="danger"] {{
    background: {theme.DANGER_BG}; border: 1px solid #f3c4c4; border-radius: 8px;
}}
QFrame[kind="danger"] QLabel {{ color: {theme.DANGER}; background: transparent; }}
QFrame[kind="warning"] {{ background: #fff8e6; border: 1px solid #f1d48a; border-radius: 8px; }}
QFrame[kind="warning"] QLabel {{ color: #7a4e00; background: transparent; }}
"""


@dataclass(frozen=True)
class Notice:
    kind: str  # "danger" or "warning"
    title: str
    text: str


def sandbox_notice(settings: Mapping[str, Any], *, runs_here: bool) -> Notice | None:
    """What to say about the tenant's workflow settings and this machine's sandbox (None:
    nothing). `runs_here`: this window runs steps (an in-process worker)."""
    allowed = bool(settings.get("allow_unsandboxed"))
    sandbox = settings.get("sandbox")
    scripts_here = runs_here and bool(settings.get("local_executor"))
    if scripts_here and sandbox is None and allowed:
        return Notice(
            "danger",
            "Script steps run on this machine without a sandbox",
            "It has no bubblewrap, and an admin allowed unsandboxed scripts: any script step "
            f"can read {WHAT_LEAKS} kept here. Install bubblewrap ({INSTALL}), or turn it "
            f"off ({TURN_OFF}).",
        )
    if scripts_here and sandbox is None:
        return Notice(
            "warning",
            "Script steps cannot run on this machine",
            f"It has no sandbox for them: install bubblewrap ({INSTALL}). Until then they "
            "fail here; an admin could allow them to run unsandboxed, and they could then "
            f"read {WHAT_LEAKS} kept here.",
        )
    if allowed:
        here = f" This machine sandboxes them ({sandbox})." if scripts_here and sandbox else ""
        return Notice(
            "warning",
            "Unsandboxed script steps are allowed",
            "An admin lets script steps run without a sandbox on any worker that has none; "
            f"there a script can read {WHAT_LEAKS} of that machine.{here} Turn it off with "
            f"{TURN_OFF}.",
        )
    return None


class SandboxNotice(QWidget):
    """Above the page's content; not dismissible: it stays while what it says holds."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(NOTICE_STYLE)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(28, 12, 28, 0)
        self.frame = QFrame()
        outer.addWidget(self.frame)
        box = QVBoxLayout(self.frame)
        box.setContentsMargins(14, 8, 14, 8)
        self.text = label(selectable=True)
        self.text.setWordWrap(True)
        box.addWidget(self.text)
        self.notice: Notice | None = None
        self.hide()

    def show_notice(self, notice: Notice | None) -> None:
        self.notice = notice
        if notice is None:
            self.hide()
            return
        self.frame.setProperty("kind", notice.kind)
        self.text.setText(f"<b>{_escape(notice.title)}</b> — {_escape(notice.text)}")
        theme.repolish(self.frame)
        theme.repolish(self.text)
        self.show()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
