"""The calibration tables made for this catalogue (`iddetective calibrate`), one per model.

A model's table says what false-match rate a distance means and gives its default
thresholds (matching/calibration.py). The shipped tables come with the package; a table made
from the operator's own labelled photos is kept here, in the catalogue, so that every process
using the catalogue (the web server, the CLI, the fleet's workers) reads the same one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from ..matching.calibration import Calibration, CalibrationError
from .dialect import Sql, json_body, timestamp

__all__ = ["Calibrations"]


@functools.lru_cache(maxsize=16)
def _parsed(model: str, body: str) -> Calibration:
    """A kept table, read once per text (every search reads its model's table)."""
    where = f"the calibration table of {model} in the catalogue"
    return Calibration.from_json(json_body(body, where, CalibrationError), where)


class Calibrations:
    """Calibration tables of both stores."""

    sql: Sql
    _audit_event: Callable[..., None]

    def calibration(self, model: str) -> Calibration | None:
        """The table made for `model` in this catalogue, or None; a damaged one is refused."""
        body = self.sql.scalar("SELECT body FROM calibration WHERE model = ?", (model,))
        return None if body is None else _parsed(model, str(body))

    def save_calibration(self, table: Calibration, actor: str) -> None:
        """Keep `table` as its model's, in place of any earlier one (recorded in the audit
        log as `calibration`)."""
        body = json.dumps(table.to_json())
        with self.sql.write():
            self.sql.execute("DELETE FROM calibration WHERE model = ?", (table.model,))
            self.sql.execute(
                "INSERT INTO calibration (model, made_at, made_by, body) VALUES (?, ?, ?, ?)",
                (table.model, timestamp(), actor, body),
            )
            self._audit_event("calibration", actor, table.model, table.impostor_pairs)
