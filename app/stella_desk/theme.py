"""Colours, fonts and the style sheet: one place for how the desk looks."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QWidget

# The light palette's colours, also as names: pages that paint a colour of their own use these.
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

LIGHT: dict[str, str] = {
    "accent": ACCENT,
    "accent_dark": ACCENT_DARK,
    "accent_disabled": "#a7a3ef",
    "background": BACKGROUND,
    "surface": SURFACE,
    "border": BORDER,
    "input_border": "#cfd4e0",
    "text": TEXT,
    "muted": MUTED,
    "danger": DANGER,
    "danger_bg": DANGER_BG,
    "danger_border": "#f3c4c4",
    "sidebar": SIDEBAR,
    "sidebar_text": SIDEBAR_TEXT,
    "sidebar_hover": "#222a40",
    "chip": "#eef0f6",
    "alt_row": "#f9fafc",
    "selection": "#e7e6fd",
    "disabled_text": "#a3a9b8",
    "disabled_bg": "#f0f1f5",
    "track": "#e8eaf2",
    "digest": "#2a3147",
    "tool_hover": "#eceefb",
    "tool_hover_border": "#d9dcf6",
    "confirm_bg": "#fff8e6",
    "confirm_border": "#f1d48a",
    "caption": "#3a4258",
}
DARK: dict[str, str] = {
    "accent": "#7c74ff",
    "accent_dark": "#6a61f5",
    "accent_disabled": "#4a4780",
    "background": "#14171f",
    "surface": "#1d212c",
    "border": "#2e3444",
    "input_border": "#3a4154",
    "text": "#e4e7f0",
    "muted": "#98a0b6",
    "danger": "#f87171",
    "danger_bg": "#3a1c1f",
    "danger_border": "#6b2a2e",
    "sidebar": "#0e1118",
    "sidebar_text": "#b9bfd3",
    "sidebar_hover": "#1d2333",
    "chip": "#272c39",
    "alt_row": "#21252f",
    "selection": "#34306b",
    "disabled_text": "#5d6477",
    "disabled_bg": "#232733",
    "track": "#2a2f3d",
    "digest": "#cfd5e6",
    "tool_hover": "#2a2f45",
    "tool_hover_border": "#3b4166",
    "confirm_bg": "#33290f",
    "confirm_border": "#6b5520",
    "caption": "#b3bacd",
}

# View > Theme: the person's choice, kept between sessions.
LIGHT_MODE, DARK_MODE, SYSTEM_MODE = "light", "dark", "system"
MODES = {LIGHT_MODE: "Light", DARK_MODE: "Dark", SYSTEM_MODE: "Follow the system"}
SETTINGS_KEY = "view/theme"

# Role -> (text colour, background): a small coloured badge per role.
ROLE_COLOURS = {
    "admin": ("#6d28d9", "#efe9fd"),
    "release-manager": ("#1d4ed8", "#e6eefd"),
    "approver": ("#0f766e", "#e2f5f2"),
    "auditor": ("#a14b06", "#fdf0e1"),
}

# Styling a combo box's drop-down removes Qt's own arrow, so the sheet supplies one.
CHEVRON = (Path(__file__).parent / "resources" / "chevron-down.svg").as_posix()


def sheet(c: dict[str, str]) -> str:
    """The desk's style sheet in a palette's colours. Rules name the desk's own widgets (by
    object name or `kind`) where a general rule would reach into Qt's own dialogs: a file
    dialog names its side bar "sidebar" too, so the desk's is "deskSidebar"."""
    return f"""
QMainWindow, QDialog {{ background: {c["background"]}; }}
QWidget {{ color: {c["text"]}; }}
QWidget#content, QWidget#page {{ background: {c["background"]}; }}
QWidget#deskSidebar {{ background: {c["sidebar"]}; }}
QLabel#brand {{ color: #ffffff; font-size: 16px; font-weight: 600; }}
QLabel#brandSub {{ color: #8d94ad; font-size: 11px; }}
QListWidget#nav {{
    background: {c["sidebar"]}; border: none; color: {c["sidebar_text"]}; font-size: 13px;
    outline: 0;
}}
QListWidget#nav::item {{ padding: 9px 14px; border-radius: 6px; margin: 1px 8px; }}
QListWidget#nav::item:hover {{ background: {c["sidebar_hover"]}; color: #ffffff; }}
QListWidget#nav::item:selected {{ background: {c["accent"]}; color: #ffffff; }}
QToolBar {{
    background: {c["surface"]}; border: none; border-bottom: 1px solid {c["border"]}; spacing: 8px;
    padding: 6px 12px;
}}
QStatusBar {{
    background: {c["surface"]}; border-top: 1px solid {c["border"]}; color: {c["muted"]};
}}
QStatusBar QLabel {{ color: {c["muted"]}; padding: 0 4px; }}
QLabel[kind="title"] {{ font-size: 22px; font-weight: 600; }}
QLabel[kind="subtitle"] {{ color: {c["muted"]}; font-size: 13px; }}
QLabel[kind="section"] {{ font-size: 11px; font-weight: 600; color: {c["muted"]}; }}
QLabel[kind="muted"] {{ color: {c["muted"]}; }}
QLabel[kind="big"] {{ font-size: 30px; font-weight: 600; }}
QLabel[kind="error"] {{ color: {c["danger"]}; font-size: 12px; }}
QLabel[kind="digest"] {{ color: {c["digest"]}; }}
QLabel[kind="chip"] {{
    background: {c["chip"]}; border: 1px solid {c["border"]}; border-radius: 10px; padding: 2px 9px;
    font-size: 12px;
}}
QLabel[kind="arrow"] {{ color: {c["muted"]}; font-size: 16px; }}
QFrame[kind="card"] {{
    background: {c["surface"]}; border: 1px solid {c["border"]}; border-radius: 10px;
}}
QFrame[kind="banner"] {{
    background: {c["danger_bg"]}; border: 1px solid {c["danger_border"]}; border-radius: 8px;
}}
QFrame[kind="banner"] QLabel {{ color: {c["danger"]}; background: transparent; }}
QLineEdit, QComboBox {{
    background: {c["surface"]}; border: 1px solid {c["input_border"]}; border-radius: 6px;
    padding: 5px 8px;
    selection-background-color: {c["accent"]};
}}
QComboBox::drop-down {{ border: none; width: 24px; }}
QComboBox::down-arrow {{ image: url({CHEVRON}); width: 12px; height: 12px; }}
QComboBox QAbstractItemView {{
    background: {c["surface"]}; border: 1px solid {c["border"]};
    selection-background-color: {c["selection"]};
    selection-color: {c["text"]}; outline: 0;
}}
QToolButton[kind="copy"]::menu-button {{
    border: none; border-left: 1px solid {c["input_border"]}; width: 16px;
}}
QLineEdit:focus, QComboBox:focus {{ border: 1px solid {c["accent"]}; }}
QLineEdit[invalid="true"] {{ border: 1px solid {c["danger"]}; background: {c["danger_bg"]}; }}
QPushButton, QToolButton[kind="copy"] {{
    background: {c["surface"]}; border: 1px solid {c["input_border"]}; border-radius: 6px;
    padding: 5px 12px;
}}
QPushButton:hover, QToolButton[kind="copy"]:hover {{ border-color: {c["accent"]}; }}
QPushButton:disabled {{ color: {c["disabled_text"]}; background: {c["disabled_bg"]}; }}
QPushButton[kind="primary"] {{
    background: {c["accent"]}; color: #ffffff; border: 1px solid {c["accent"]}; font-weight: 600;
}}
QPushButton[kind="primary"]:hover {{ background: {c["accent_dark"]}; }}
QPushButton[kind="primary"]:disabled {{
    background: {c["accent_disabled"]}; border-color: {c["accent_disabled"]};
}}
QPushButton[kind="flat"] {{ border: none; background: transparent; color: {c["muted"]}; }}
QPushButton[kind="flat"]:hover {{ color: {c["danger"]}; }}
QTableView {{
    background: {c["surface"]}; border: 1px solid {c["border"]}; border-radius: 10px;
    alternate-background-color: {c["alt_row"]}; selection-background-color: {c["selection"]};
    selection-color: {c["text"]}; outline: 0;
}}
QTableView::item {{ padding: 0 6px; border: none; }}
QTableView::item:selected {{ background: {c["selection"]}; color: {c["text"]}; }}
QHeaderView::section {{
    background: {c["surface"]}; color: {c["muted"]}; border: none;
    border-bottom: 1px solid {c["border"]};
    padding: 7px 6px; font-weight: 600;
}}
QScrollArea {{ background: transparent; border: none; }}
QScrollArea > QWidget > QWidget {{ background: transparent; }}
QProgressBar {{
    background: {c["track"]}; border: none; border-radius: 5px; text-align: center; height: 18px;
    color: {c["text"]};
}}
QProgressBar::chunk {{ background: {c["accent"]}; border-radius: 5px; }}
QSplitter::handle {{ background: transparent; }}
QPushButton[kind="small"] {{ padding: 3px 9px; font-size: 12px; }}
QListWidget#nav:focus {{ border: none; }}
QListWidget#nav::item:focus {{ border: 1px solid {c["sidebar_text"]}; }}
QMenuBar {{ background: {c["surface"]}; border-bottom: 1px solid {c["border"]}; }}
QMenuBar::item {{ padding: 4px 10px; background: transparent; }}
QMenuBar::item:selected {{ background: {c["selection"]}; border-radius: 4px; }}
QMenu {{ background: {c["surface"]}; border: 1px solid {c["border"]}; padding: 4px; }}
QMenu::item {{ padding: 5px 22px 5px 22px; border-radius: 4px; }}
QMenu::item:selected {{ background: {c["selection"]}; color: {c["text"]}; }}
QMenu::item:disabled {{ color: {c["disabled_text"]}; }}
QMenu::separator {{ height: 1px; background: {c["border"]}; margin: 4px 8px; }}
QToolTip {{ color: {c["text"]}; background: {c["surface"]}; border: 1px solid {c["border"]}; }}
"""


STYLE_SHEET = sheet(LIGHT)


def mono_font(point_size: float | None = None) -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if point_size is not None:
        font.setPointSizeF(point_size)
    return font


def resolve(mode: str) -> str:
    """Light or dark: "system" follows the platform's colour scheme (light where it says none)."""
    if mode == SYSTEM_MODE:
        hints = QGuiApplication.styleHints()
        return DARK_MODE if hints.colorScheme() == Qt.ColorScheme.Dark else LIGHT_MODE
    return DARK_MODE if mode == DARK_MODE else LIGHT_MODE


def colours(mode: str = LIGHT_MODE) -> dict[str, str]:
    return DARK if resolve(mode) == DARK_MODE else LIGHT


def settings() -> QSettings:
    """Where the desk keeps a person's view choices (tests point QSettings elsewhere)."""
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Stella", "Release Desk"
    )


def saved_mode() -> str:
    value = settings().value(SETTINGS_KEY, SYSTEM_MODE)
    return str(value) if value in MODES else SYSTEM_MODE


def save_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown theme {mode!r}")
    store = settings()
    store.setValue(SETTINGS_KEY, mode)
    store.sync()


def apply(app: QApplication, mode: str = LIGHT_MODE) -> None:
    """Fusion + the palette of `mode`: the same look on every platform (and offscreen). Qt's
    own dialogs (file dialogs) draw with this palette."""
    c = colours(mode)
    app.setStyle("Fusion")
    palette = QPalette()
    role = QPalette.ColorRole
    for which, colour in (
        (role.Window, c["background"]),
        (role.WindowText, c["text"]),
        (role.Base, c["surface"]),
        (role.AlternateBase, c["alt_row"]),
        (role.Text, c["text"]),
        (role.Button, c["surface"]),
        (role.ButtonText, c["text"]),
        (role.ToolTipBase, c["surface"]),
        (role.ToolTipText, c["text"]),
        (role.PlaceholderText, c["muted"]),
        (role.Highlight, c["accent"]),
        (role.HighlightedText, "#ffffff"),
        (role.Link, c["accent"]),
        (role.Mid, c["border"]),
        (role.Midlight, c["border"]),
        (role.Dark, c["input_border"]),
        (role.Light, c["surface"]),
    ):
        palette.setColor(which, QColor(colour))
    for which in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, which, QColor(c["disabled_text"]))
    app.setPalette(palette)


def style(widget: QWidget, mode: str = LIGHT_MODE) -> None:
    """The style sheet goes on the top window; its children and dialogs inherit it."""
    widget.setStyleSheet(sheet(colours(mode)))


def repolish(widget: QWidget) -> None:
    """Re-evaluate property selectors (e.g. `invalid`) after a property changed."""
    widget.style().unpolish(widget)
    widget.style().polish(widget)
    widget.update()
