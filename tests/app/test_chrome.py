"""The window's chrome as a person uses it: the menu bar, Help, the page shortcuts, a keyboard
path through the navigation, the dark theme kept between starts, and a readable file dialog."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget

from stella_desk import theme
from stella_desk.help import HelpDialog
from stella_desk.ops import Ops
from stella_desk.session import Session
from stella_desk.window import PAGES, MainWindow


def activate(desk: MainWindow, qtbot) -> None:
    desk.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is desk)


def menu_titles(desk: MainWindow) -> list[str]:
    return [a.text().replace("&", "") for a in desk.menuBar().actions()]


def items(desk: MainWindow, title: str) -> list[str]:
    menu = next(a.menu() for a in desk.menuBar().actions() if a.text().replace("&", "") == title)
    return [a.text().replace("&", "").split("\t")[0] for a in menu.actions() if a.text()]


def test_the_menu_bar_has_file_edit_view_help(desk: MainWindow) -> None:
    assert menu_titles(desk) == ["File", "Edit", "View", "Help"]
    assert "Quit" in items(desk, "File")
    assert items(desk, "Edit")[:2] == ["Undo", "Redo"]
    assert items(desk, "View")[: len(PAGES)] == [title for _, title in PAGES]
    assert "Theme" in items(desk, "View")
    assert items(desk, "Help") == [
        "Stella Release Desk help",
        "Keyboard shortcuts",
        "About Stella Release Desk",
    ]


def test_help_explains_the_pages_terms_and_shortcuts(desk: MainWindow) -> None:
    desk.menus.help.trigger()
    dialog = desk.help_dialog
    assert isinstance(dialog, HelpDialog)
    assert dialog.isVisible()
    pages = dialog.pages.toPlainText()
    for _, title in PAGES:
        assert title in pages
    assert "digest" in pages
    terms = dialog.terms.toPlainText()
    for word in ("Digest", "Tag", "Gate", "Separation of duties", "Workflow", "Person"):
        assert word in terms
    assert "template" not in terms.lower()
    dialog.accept()
    desk.menus.shortcuts.trigger()
    assert dialog.tabs.currentWidget() is dialog.shortcuts
    text = dialog.shortcuts.toPlainText()
    assert "Ctrl+1" in text
    assert "Ctrl+Y or Ctrl+Shift+Z" in text
    dialog.accept()
    desk.menus.about.trigger()
    assert desk.about_dialog is not None
    assert desk.about_dialog.isVisible()
    desk.about_dialog.accept()


def test_ctrl_and_a_number_opens_that_page(desk: MainWindow, qtbot) -> None:
    activate(desk, qtbot)
    ctrl = Qt.KeyboardModifier.ControlModifier
    for index, (key, _title) in enumerate(PAGES[:9]):
        qtbot.keyClick(desk, getattr(Qt.Key, f"Key_{index + 1}"), ctrl)
        assert desk.stack.currentWidget() is desk.pages[key], key
    qtbot.keyClick(desk, Qt.Key.Key_0, ctrl)
    assert desk.stack.currentWidget() is desk.pages[PAGES[9][0]]


def test_the_navigation_takes_the_keyboard_and_arrows_move_between_pages(
    desk: MainWindow, qtbot
) -> None:
    activate(desk, qtbot)
    desk.show_page("dashboard")
    assert desk.nav.focusPolicy() & Qt.FocusPolicy.TabFocus
    desk.nav.setFocus(Qt.FocusReason.TabFocusReason)
    assert desk.nav.hasFocus()
    qtbot.keyClick(desk.nav, Qt.Key.Key_Down)
    assert desk.stack.currentWidget() is desk.pages["releases"]
    qtbot.keyClick(desk.nav, Qt.Key.Key_Down)
    qtbot.keyClick(desk.nav, Qt.Key.Key_Up)
    assert desk.stack.currentWidget() is desk.pages["releases"]
    qtbot.keyClick(desk.nav, Qt.Key.Key_End)
    assert desk.stack.currentWidget() is desk.pages[PAGES[-1][0]]


def test_dark_theme_is_applied_and_kept_for_the_next_start(qtbot, run, desk: MainWindow) -> None:
    assert desk.theme_mode == theme.SYSTEM_MODE  # nothing chosen yet
    desk.menus.theme_actions[theme.DARK_MODE].trigger()
    app = QApplication.instance()
    window_colour = app.palette().color(QPalette.ColorRole.Window)
    assert window_colour.lightness() < 60
    assert theme.DARK["background"] in desk.styleSheet()
    # A page paints dark: the content behind the Releases page.
    desk.show_page("releases")
    image = desk.grab().toImage()
    content = desk.stack.mapTo(desk, QPoint(desk.stack.width() - 5, desk.stack.height() - 5))
    assert QColor(image.pixel(content)).lightness() < 80
    assert desk.menus.theme_actions[theme.DARK_MODE].isChecked()

    again_ops = Ops()
    again = MainWindow(again_ops, Session())
    qtbot.addWidget(again)
    assert again.theme_mode == theme.DARK_MODE
    assert again.menus.theme_actions[theme.DARK_MODE].isChecked()
    run(again_ops.shutdown(timeout=5))
    desk.set_theme(theme.LIGHT_MODE)
    assert app.palette().color(QPalette.ColorRole.Window).lightness() > 200
    assert theme.saved_mode() == theme.LIGHT_MODE


def test_the_file_dialog_keeps_a_readable_sidebar(desk: MainWindow, qtbot, tmp_path) -> None:
    page = desk.show_page("evidence")
    verify = page.open_verify_dialog()
    verify.choose_button.click()
    dialog = verify.file_dialog
    assert isinstance(dialog, QFileDialog)
    dialog.setDirectory(str(tmp_path))
    qtbot.waitExposed(dialog)
    sidebar = dialog.findChild(QWidget, "sidebar")
    assert sidebar is not None
    image = sidebar.grab().toImage()
    corner = QColor(image.pixel(image.width() - 4, image.height() - 4))
    # The palette's base (light), not the desk's navy navigation colour.
    assert corner.name() != theme.LIGHT["sidebar"]
    assert corner.lightness() > 200
    dialog.reject()
    verify.reject()
