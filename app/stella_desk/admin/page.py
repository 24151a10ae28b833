"""The Administration page: one tab per kind of record. Every tab reads for everyone and offers
changes only to the roles the core lets make them."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from stella_desk.admin.common import AdminTab
from stella_desk.admin.components import ComponentsTab
from stella_desk.admin.environments import EnvironmentsTab
from stella_desk.admin.freezes import FreezesTab
from stella_desk.admin.people import PeopleTab
from stella_desk.admin.registries import RegistriesTab
from stella_desk.chrome import PAGE_MARGINS, PageHeader
from stella_desk.ops import Ops
from stella_desk.session import Session


class AdminPage(QWidget):
    status_message = Signal(str)

    def __init__(self, ops: Ops, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("page")
        self.ops = ops
        self.session = session
        page = QVBoxLayout(self)
        page.setContentsMargins(*PAGE_MARGINS)
        page.setSpacing(6)
        page.addWidget(
            PageHeader(
                "Administration",
                "Environments and their policy, freezes, registries, components and people.",
            )
        )
        self.environments = EnvironmentsTab(ops, session)
        self.freezes = FreezesTab(ops, session)
        self.registries = RegistriesTab(ops, session)
        self.components = ComponentsTab(ops, session)
        self.people = PeopleTab(ops, session)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for tab, title in self.all_tabs():
            self.tabs.addTab(tab, title)
            tab.status_message.connect(self.status_message)
        page.addWidget(self.tabs, 1)

    def all_tabs(self) -> list[tuple[AdminTab, str]]:
        return [
            (self.environments, "Environments"),
            (self.freezes, "Freezes"),
            (self.registries, "Registries"),
            (self.components, "Components"),
            (self.people, "People"),
        ]

    def show_tab(self, tab: AdminTab) -> AdminTab:
        self.tabs.setCurrentWidget(tab)
        return tab

    def follow_role(self) -> None:
        for tab, _title in self.all_tabs():
            tab.follow_role()

    async def refresh(self) -> None:
        await asyncio.gather(*(tab.refresh() for tab, _title in self.all_tabs()))
