"""Colours, fonts and the style sheet: one place for how the desk looks."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette
from PySide6.QtWidgets import QApplication, QWidget

ACCENT = "#4f46e5"
ACCENT_DARK = "#4338ca"
BACKGROUND = "#f4f5f9"
SURFACE = "#ffffff"
BORDER = "#e2e5ee"
TEXT = "#1c2233"
MUTED = "#687086"
DANGER = "#c42b2b"
DANGER_BG = "#fdeeee"
SIDEBAR = "#161c2d"
SIDEBAR_TEXT = "#c3c8dc"

# Role -> (text colour, background): a small coloured badge per role.
ROLE_COLOURS = {
    "admin": ("#6d28d9", "#efe9fd"),
    "release-manager": ("#1d4ed8", "#e6eefd"),
    "approver": ("#0f766e", "#e2f5f2"),
    "auditor": ("#a14b06", "#fdf0e1"),
}

# Styling a combo box's drop-down removes Qt's own arrow, so the sheet supplies one.
CHEVRON = (Path(__file__).parent / "resources" / "chevron-down.svg").as_posix()

STYLE_SHEET = f"""
QMainWindow, QDialog {{ background: {BACKGROUND}; }}
QWidget {{ color: {TEXT}; }}
QWidget#content, QWidget#page {{ background: {BACKGROUND}; }}
QWidget#sidebar {{ background: {SIDEBAR}; }}
QLabel#brand {{ color: #ffffff; font-size: 16px; font-weight: 600; }}
QLabel#brandSub {{ color: #8d94ad; font-size: 11px; }}
QListWidget#nav {{
    background: {SIDEBAR}; border: none; color: {SIDEBAR_TEXT}; font-size: 13px; outline: 0;
}}
QListWidget#nav::item {{ padding: 9px 14px; border-radius: 6px; margin: 1px 8px; }}
QListWidget#nav::item:hover {{ background: #222a40; color: #ffffff; }}
QListWidget#nav::item:selected {{ background: {ACCENT}; color: #ffffff; }}
QToolBar {{
    background: {SURFACE}; border: none; border-bottom: 1px solid {BORDER}; spacing: 8px;
    padding: 6px 12px;
}}
QStatusBar {{ background: {SURFACE}; border-top: 1px solid {BORDER}; color: {MUTED}; }}
QStatusBar QLabel {{ color: {MUTED}; padding: 0 4px; }}
QLabel[kind="title"] {{ font-size: 22px; font-weight: 600; }}
QLabel[kind="subtitle"] {{ color: {MUTED}; font-size: 13px; }}
QLabel[kind="section"] {{ font-size: 11px; font-weight: 600; color: {MUTED}; }}
QLabel[kind="muted"] {{ color: {MUTED}; }}
QLabel[kind="big"] {{ font-size: 30px; font-weight: 600; }}
QLabel[kind="error"] {{ color: {DANGER}; font-size: 12px; }}
QLabel[kind="digest"] {{ color: #2a3147; }}
QLabel[kind="chip"] {{
    background: #eef0f6; border: 1px solid {BORDER}; border-radius: 10px; padding: 2px 9px;
    font-size: 12px;
}}
QLabel[kind="arrow"] {{ color: {MUTED}; font-size: 16px; }}
QFrame[kind="card"] {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 10px; }}
QFrame[kind="banner"] {{
    background: {DANGER_BG}; border: 1px solid #f3c4c4; border-radius: 8px;
}}
QFrame[kind="banner"] QLabel {{ color: {DANGER}; background: transparent; }}
QLineEdit, QComboBox {{
    background: {SURFACE}; border: 1px solid #cfd4e0; border-radius: 6px; padding: 5px 8px;
    selection-background-color: {ACCENT};
}}
QComboBox::drop-down {{ border: none; width: 24px; }}
QComboBox::down-arrow {{ image: url({CHEVRON}); width: 12px; height: 12px; }}
QComboBox QAbstractItemView {{
    background: {SURFACE}; border: 1px solid {BORDER}; selection-background-color: #e7e6fd;
    selection-color: {TEXT}; outline: 0;
}}
QToolButton[kind="copy"]::menu-button {{
    border: none; border-left: 1px solid #cfd4e0; width: 16px;
}}
QLineEdit:focus, QComboBox:focus {{ border: 1px solid {ACCENT}; }}
QLineEdit[invalid="true"] {{ border: 1px solid {DANGER}; background: {DANGER_BG}; }}
QPushButton, QToolButton[kind="copy"] {{
    background: {SURFACE}; border: 1px solid #cfd4e0; border-radius: 6px; padding: 5px 12px;
}}
QPushButton:hover, QToolButton[kind="copy"]:hover {{ border-color: {ACCENT}; }}
QPushButton:disabled {{ color: #a3a9b8; background: #f0f1f5; }}
QPushButton[kind="primary"] {{
    background: {ACCENT}; color: #ffffff; border: 1px solid {ACCENT}; font-weight: 600;
}}
QPushButton[kind="primary"]:hover {{ background: {ACCENT_DARK}; }}
QPushButton[kind="primary"]:disabled {{ background: #a7a3ef; border-color: #a7a3ef; }}
QPushButton[kind="flat"] {{ border: none; background: transparent; color: {MUTED}; }}
QPushButton[kind="flat"]:hover {{ color: {DANGER}; }}
QTableView {{
    background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 10px;
    alternate-background-color: #f9fafc; selection-background-color: #e7e6fd;
    selection-color: {TEXT}; outline: 0;
}}
QTableView::item {{ padding: 0 6px; border: none; }}
QTableView::item:selected {{ background: #e7e6fd; color: {TEXT}; }}
QHeaderView::section {{
    background: {SURFACE}; color: {MUTED}; border: none; border-bottom: 1px solid {BORDER};
    padding: 7px 6px; font-weight: 600;
}}
QScrollArea {{ background: transparent; border: none; }}
QScrollArea > QWidget > QWidget {{ background: transparent; }}
QProgressBar {{
    background: #e8eaf2; border: none; border-radius: 5px; text-align: center; height: 18px;
    color: {TEXT};
}}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 5px; }}
QSplitter::handle {{ background: transparent; }}
"""


def mono_font(point_size: float | None = None) -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if point_size is not None:
        font.setPointSizeF(point_size)
    return font


def apply(app: QApplication) -> None:
    """Fusion + a light palette: the same look on every platform (and offscreen)."""
    app.setStyle("Fusion")
    palette = app.palette()
    palette.setColor(QPalette.ColorRole.Window, QColor(BACKGROUND))
    palette.setColor(QPalette.ColorRole.Base, QColor(SURFACE))
    palette.setColor(QPalette.ColorRole.Text, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.WindowText, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.Highlight, QColor(ACCENT))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    app.setPalette(palette)


def style(widget: QWidget) -> None:
    """The style sheet goes on the top window; its children and dialogs inherit it."""
    widget.setStyleSheet(STYLE_SHEET)


def repolish(widget: QWidget) -> None:
    """Re-evaluate property selectors (e.g. `invalid`) after a property changed."""
    widget.style().unpolish(widget)
    widget.style().polish(widget)
    widget.update()
