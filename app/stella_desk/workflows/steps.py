"""How step types look in the editor: colour by category, a glyph per type, and spec lookups."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap

from stella_core.workflows.steps.spec import StepTypeSpec

# Category -> accent colour. Unknown categories (plugins) get a stable colour from their name.
CATEGORY_COLOURS = {
    "control": "#7c3aed",
    "action": "#2563eb",
    "check": "#0d9488",
    "gate": "#ca8a04",
    "deploy": "#ea580c",
    "general": "#64748b",
}
CATEGORY_TITLES = {
    "control": "Control",
    "action": "Actions",
    "check": "Checks",
    "gate": "Gates",
    "deploy": "Deploy",
    "general": "General",
}
# Glyphs every bundled font (DejaVu included) has.
TYPE_GLYPHS = {
    "approval": "✓",
    "wait": "◷",
    "script": ">_",
    "http-check": "⇄",
    "notify": "✉",
    "fail": "✕",
}
UNKNOWN_COLOUR = "#9ca3af"


class Registry(Protocol):
    """What the editor uses of the core's `StepRegistry`."""

    def specs(self) -> Any: ...

    def get(self, name: str) -> Any: ...


def spec_for(registry: Registry, type_name: str) -> StepTypeSpec | None:
    """The declaration of a step type, or None for a type the registry does not know."""
    try:
        spec = registry.get(type_name)
    except (KeyError, LookupError, ValueError):
        return None
    return spec if isinstance(spec, StepTypeSpec) else None


def all_specs(registry: Registry) -> list[StepTypeSpec]:
    return sorted(registry.specs(), key=lambda s: (category_order(s.category), s.title))


def category_order(category: str) -> int:
    order = list(CATEGORY_COLOURS)
    return order.index(category) if category in order else len(order)


def category_title(category: str) -> str:
    return CATEGORY_TITLES.get(category, category.replace("-", " ").capitalize())


def category_colour(category: str | None) -> QColor:
    if category is None:
        return QColor(UNKNOWN_COLOUR)
    if category in CATEGORY_COLOURS:
        return QColor(CATEGORY_COLOURS[category])
    hue = int(hashlib.sha256(category.encode()).hexdigest()[:4], 16) % 360
    return QColor.fromHsv(hue, 150, 200)


def glyph_for(type_name: str) -> str:
    return TYPE_GLYPHS.get(type_name, (type_name[:1] or "?").upper())


def paint_badge(painter: QPainter, rect: QRectF, colour: QColor, glyph: str) -> None:
    """The round coloured badge with the type's glyph (on cards and in the palette)."""
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawEllipse(rect)
    font = QFont(painter.font())
    font.setBold(True)
    font.setPixelSize(max(8, int(rect.height() * (0.42 if len(glyph) > 1 else 0.55))))
    painter.setFont(font)
    painter.setPen(QColor("#ffffff"))
    painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, glyph)


def type_icon(type_name: str, category: str | None, size: int = 20) -> QIcon:
    pixmap = QPixmap(size * 2, size * 2)  # drawn at 2x so it stays crisp on high-DPI screens
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    rect = QRectF(1, 1, size * 2 - 2, size * 2 - 2)
    paint_badge(painter, rect, category_colour(category), glyph_for(type_name))
    painter.end()
    pixmap.setDevicePixelRatio(2.0)
    return QIcon(pixmap)


def input_properties(spec: StepTypeSpec | None) -> dict[str, dict[str, Any]]:
    if spec is None:
        return {}
    props = spec.input_schema.get("properties", {})
    return {k: dict(v) for k, v in props.items()} if isinstance(props, dict) else {}


def schema_hint(schema: dict[str, Any]) -> str:
    """A short human type for an input's schema: `string`, `list of string`, `map of string`."""
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items", {})
        return f"list of {items.get('type', 'any')}" if isinstance(items, dict) else "list"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "type" in extra:
            return f"map of {extra['type']}"
        return "object"
    return str(kind)
