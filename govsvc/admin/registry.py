"""What the admin UI shows each role: the navigation and the dashboard's panels, each guarded by a permission.

A domain adds its pages by registering a navigation item (and, for the dashboard, a panel) with the permission
its pages need; the menu and the dashboard then show them to the roles the policy allows, and the pages' routes
carry the same permission with ``@requires``. Phase 2 (data-subject requests, retention, legal holds) plugs in
here without touching the existing pages::

    registry.add_nav(NavItem("admin.dsr_queue", lazy_gettext("Requests"), ("dsr", "read"), order=25))
    registry.add_panel(Panel("dsr", lazy_gettext("Requests"), ("dsr", "read"), "admin/panels/dsr.html",
                             build=dsr_panel, slot="requests"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from govsvc.auth.service import Principal

Permission = tuple[str, str]
# Dashboard slots, in page order: "overview" (consent, audit), then the phase-2 ones.
SLOTS = ("overview", "requests", "retention")


@dataclass(frozen=True)
class NavItem:
    """A menu entry: the page's endpoint, its label (lazily translated) and the permission the page needs."""

    endpoint: str
    label: Any
    permission: Permission
    order: int = 100
    section: str = ""  # endpoints starting with "admin.<section>" mark this entry as the current one


@dataclass(frozen=True)
class PanelContext:
    """What a panel builder gets: the request's session, who is looking, their zone and the time."""

    session: Session
    principal: Principal
    time_zone: ZoneInfo
    language: str  # en | zh
    now: datetime
    extensions: Mapping[str, Any]
    allowed: Callable[[str, str], bool]


@dataclass(frozen=True)
class Panel:
    """A dashboard panel: ``build(context)`` returns the template's variables (no logic in the template)."""

    key: str
    title: Any
    permission: Permission
    template: str
    build: Callable[[PanelContext], Mapping[str, Any]]
    order: int = 100
    slot: str = "overview"


@dataclass
class Registry:
    navigation: list[NavItem] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)

    def add_nav(self, item: NavItem) -> None:
        self.navigation = sorted([*(i for i in self.navigation if i.endpoint != item.endpoint), item], key=_order)

    def add_panel(self, panel: Panel) -> None:
        if panel.slot not in SLOTS:
            raise ValueError(f"unknown dashboard slot {panel.slot!r}; one of {', '.join(SLOTS)}")
        self.panels = sorted([*(p for p in self.panels if p.key != panel.key), panel], key=_order)

    def nav_for(self, allowed: Callable[[str, str], bool]) -> list[NavItem]:
        """The entries a role may open (``allowed(resource, action)`` asks the policy)."""
        return [item for item in self.navigation if allowed(*item.permission)]

    def panels_for(self, allowed: Callable[[str, str], bool]) -> dict[str, list[Panel]]:
        """The panels a role may see, by slot."""
        slots: dict[str, list[Panel]] = {slot: [] for slot in SLOTS}
        for panel in self.panels:
            if allowed(*panel.permission):
                slots[panel.slot].append(panel)
        return slots


def _order(entry: NavItem | Panel) -> tuple[int, str]:
    return (entry.order, entry.endpoint if isinstance(entry, NavItem) else entry.key)


registry = Registry()
