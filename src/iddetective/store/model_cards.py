"""The model cards of this catalogue (`iddetective models add`): ONNX embedders the operator
brought, each recorded with its file's SHA-256, how faces are fed to it and its licence
(faces/model_cards.py). Kept in the catalogue so that every process using it (the web
server, the CLI, the workers) resolves `card:NAME` to the same card.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..errors import NotFound, UsageError
from ..faces.model_cards import ModelCard, ModelCardError
from .dialect import Sql, json_body

__all__ = ["ModelCards"]


def _parsed(name: str, body: str) -> ModelCard:
    where = f"the model card {name!r} in the catalogue"
    return ModelCard.from_json(json_body(body, where, ModelCardError), where)


class ModelCards:
    """Model cards of both stores."""

    sql: Sql
    _audit_event: Callable[..., None]

    def model_card(self, name: str) -> ModelCard | None:
        """The card named `name`, or None; a damaged one is refused (`ModelCardError`)."""
        body = self.sql.scalar("SELECT body FROM model_card WHERE name = ?", (name,))
        return None if body is None else _parsed(name, str(body))

    def model_cards(self) -> list[ModelCard]:
        """Every card, by name."""
        rows = self.sql.rows("SELECT name, body FROM model_card ORDER BY name")
        return [_parsed(str(name), str(body)) for name, body in rows]

    def save_model_card(self, card: ModelCard, actor: str) -> None:
        """Keep `card`; a card of that name already here is refused (`UsageError`): its
        vectors would change meaning (remove it first). Audited as `model-card`."""
        with self.sql.write():
            if self.sql.scalar("SELECT 1 FROM model_card WHERE name = ?", (card.name,)):
                raise UsageError(
                    f"a model card named {card.name!r} is already in the catalogue; "
                    "remove it first (models remove) or choose another name"
                )
            self.sql.execute(
                "INSERT INTO model_card (name, body, added_at, added_by) VALUES (?, ?, ?, ?)",
                (card.name, json.dumps(card.to_json()), card.added_at, card.added_by),
            )
            self._audit_event("model-card", actor, card.name, 1)

    def remove_model_card(self, name: str, actor: str) -> ModelCard:
        """Remove the card `name` (`NotFound` if absent); refused (`UsageError`) while faces
        embedded by it are stored. Audited as `model-card-removed`."""
        with self.sql.write():
            card = self.model_card(name)
            if card is None:
                raise NotFound(f"no model card is named {name!r}")
            faces = int(self.sql.scalar("SELECT count(*) FROM face WHERE model = ?", (name,)))
            if faces:
                raise UsageError(
                    f"{faces} stored faces were embedded by the model {name!r}; erase or "
                    "re-index them before removing its card"
                )
            self.sql.execute("DELETE FROM model_card WHERE name = ?", (name,))
            self._audit_event("model-card-removed", actor, name, 0)
        return card
