"""The menu bar: File, Edit, View (pages with Ctrl+1…, Theme) and Help (help, keyboard shortcuts,
About). Built for the main window, which owns the pages; the actions call back into it.

Edit's items act on what has the keyboard (a text field) or, on the Workflows page, on the
canvas. They show their keys but do not own them: the text fields and the editor already bind
Ctrl+Z and friends, and a key bound twice in one window would do nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QApplication, QLineEdit, QPlainTextEdit, QTextEdit

from stella_desk import theme
from stella_desk.help import page_key

if TYPE_CHECKING:
    from stella_desk.window import MainWindow
    from stella_desk.workflows.editor import WorkflowEditor


@dataclass
class Menus:
    page_actions: dict[str, QAction] = field(default_factory=dict)
    theme_actions: dict[str, QAction] = field(default_factory=dict)
    edit_actions: dict[str, QAction] = field(default_factory=dict)
    help: QAction | None = None
    shortcuts: QAction | None = None
    about: QAction | None = None
    quit: QAction | None = None


def build_menus(window: MainWindow, pages: list[tuple[str, str]]) -> Menus:
    menus = Menus()
    bar = window.menuBar()

    file_menu = bar.addMenu("&File")
    verify = file_menu.addAction("Verify an evidence archive…")
    verify.triggered.connect(window.open_verify)
    file_menu.addSeparator()
    menus.quit = file_menu.addAction("&Quit")
    menus.quit.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
    if menus.quit.shortcut().isEmpty():
        menus.quit.setShortcut(QKeySequence("Ctrl+Q"))
    menus.quit.triggered.connect(window.close)

    edit_menu = bar.addMenu("&Edit")
    for name, keys in (
        ("Undo", "Ctrl+Z"),
        ("Redo", "Ctrl+Y"),
        (None, None),
        ("Cut", "Ctrl+X"),
        ("Copy", "Ctrl+C"),
        ("Paste", "Ctrl+V"),
        ("Select all", "Ctrl+A"),
    ):
        if name is None:
            edit_menu.addSeparator()
            continue
        action = edit_menu.addAction(f"{name}\t{keys}")
        action.triggered.connect(_edit(window, name))
        menus.edit_actions[name] = action

    view_menu = bar.addMenu("&View")
    for index, (key, title) in enumerate(pages):
        action = view_menu.addAction(title)
        if index < 10:
            action.setShortcut(QKeySequence(page_key(index)))
        action.triggered.connect(lambda _checked=False, k=key: window.show_page(k))
        menus.page_actions[key] = action
    view_menu.addSeparator()
    theme_menu = view_menu.addMenu("&Theme")
    group = QActionGroup(window)
    group.setExclusive(True)
    for mode, words in theme.MODES.items():
        action = theme_menu.addAction(words)
        action.setCheckable(True)
        group.addAction(action)
        action.triggered.connect(lambda _checked=False, m=mode: window.set_theme(m))
        menus.theme_actions[mode] = action

    help_menu = bar.addMenu("&Help")
    menus.help = help_menu.addAction("Stella Release Desk &help")
    menus.help.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
    if menus.help.shortcut().isEmpty():
        menus.help.setShortcut(QKeySequence("F1"))
    menus.help.triggered.connect(lambda: window.open_help("pages"))
    menus.shortcuts = help_menu.addAction("&Keyboard shortcuts")
    menus.shortcuts.triggered.connect(lambda: window.open_help("shortcuts"))
    help_menu.addSeparator()
    menus.about = help_menu.addAction("&About Stella Release Desk")
    menus.about.triggered.connect(window.open_about)
    return menus


def _edit(window: MainWindow, name: str) -> Callable[[], None]:
    def act() -> None:
        focus = QApplication.focusWidget()
        if isinstance(focus, QLineEdit | QPlainTextEdit | QTextEdit):
            method = {
                "Undo": "undo",
                "Redo": "redo",
                "Cut": "cut",
                "Copy": "copy",
                "Paste": "paste",
                "Select all": "selectAll",
            }[name]
            getattr(focus, method)()
            return
        if window.stack.currentWidget() is window.workflows:
            editor = window.workflows
            {
                "Undo": editor.document.undo_stack.undo,
                "Redo": editor.document.undo_stack.redo,
                "Cut": lambda: _cut(editor),
                "Copy": editor.copy,
                "Paste": editor.paste,
                "Select all": editor.scene.select_all,
            }[name]()

    return act


def _cut(editor: WorkflowEditor) -> None:
    editor.copy()
    editor.delete()
