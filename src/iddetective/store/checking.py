"""What `iddetective check` asks of a store, written once over the store's `sql`: the files
the catalogue recorded, and whether the database itself is intact."""

from __future__ import annotations

from collections.abc import Iterator

from ..entities import FileStat, StoredFile
from .dialect import Sql

__all__ = ["Checking"]

#: Files read per statement while listing them all.
_PAGE = 10_000


class Checking:
    """The records `check` compares the data directory with, in both stores."""

    sql: Sql

    def stored_files(self) -> Iterator[StoredFile]:
        """Every file of every stored photo with the size, mtime and SHA-256 it was indexed
        with, in path order (read a page at a time)."""
        after = ""
        while True:
            rows = self.sql.rows(
                "SELECT f.path, f.size, f.mtime_ns, p.sha256 FROM photo_file f "
                "JOIN photo p ON p.id = f.photo_id WHERE f.path > ? ORDER BY f.path LIMIT ?",
                (after, _PAGE),
            )
            for path, size, mtime_ns, sha256 in rows:
                yield StoredFile(FileStat(path, size, mtime_ns), sha256)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def integrity_problems(self) -> list[str]:
        """What is wrong inside the database (empty when it is intact): the engine's own
        checks, and vectors whose length is not their model's recorded dimension."""
        return self.sql.engine_problems() + self._vector_length_problems()

    def _vector_length_problems(self) -> list[str]:
        problems = []
        for table, what in (("face", "faces"), ("optout", "opt-out faces")):
            length = self.sql.vector_length("t.embedding")
            rows = self.sql.rows(
                f"SELECT t.model, m.dimension, {length}, count(*) FROM {table} t "
                "LEFT JOIN model m ON m.name = t.model "
                f"WHERE m.dimension IS NULL OR {length} <> m.dimension "
                f"GROUP BY t.model, m.dimension, {length} ORDER BY t.model"
            )
            for model, dimension, found, count in rows:
                recorded = "none" if dimension is None else f"{dimension}"
                problems.append(
                    f"{count} {what} of the model {model!r} have {found}-dimensional vectors "
                    f"(the dimension the catalogue records for the model: {recorded})"
                )
        return problems
