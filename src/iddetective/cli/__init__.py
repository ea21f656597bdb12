"""The `iddetective` command: parse, call one library method, print.

`common.py` holds the group (`main`) and what every command shares; each module beside it
holds the commands of one concern and registers them on `main` when imported.

Exit codes (docs/contracts.md): 0 done; 1 error (named person or photo not found, ambiguous
name, catalogue problem); 2 bad arguments (missing path, unreadable manifest or query photo);
3 index finished but some photos failed; 130 interrupted.
"""

from __future__ import annotations

from . import admin, curation, evaluation, fleet, indexing, models, privacy, searching
from .common import main

__all__ = ["main"]

#: The modules whose commands `main` holds (imported for that alone).
COMMAND_MODULES = (admin, curation, evaluation, fleet, indexing, models, privacy, searching)
