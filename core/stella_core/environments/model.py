"""Environment domain types."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Environment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID
    name: str
    order: int = Field(ge=0)
    required_approvals: int = Field(ge=0)
    separation_of_duties: bool
    created_at: datetime
    created_by: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "name": self.name,
            "order": self.order,
            "required_approvals": self.required_approvals,
            "separation_of_duties": self.separation_of_duties,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
        }
