"""`SqlStore`: the whole `Store`, written once for both databases over a `Sql` object (the
database: connections, transactions, statements, dialect; store/dialect.py) and a `TextSearch`
(how the database keeps and searches people's text; person_text.py).

Its parts, by concern, are classes of their own modules, combined here into one class:
photos.py and saving.py (photos, files, faces; `save`), embedding_models.py (the models
of the stored vectors and their dimensions), checking.py, people.py (with the query
compiler, people_query.py), clusters.py, erasing.py, privacy.py, access.py and
calibrations.py (each model's calibration table), model_cards.py (the operator's ONNX
embedders). Each part runs its statements on
`self.sql` and calls the others' methods on `self`; what one needs of another it declares at
the top of its class. A database is `SqliteStore`
(sqlite.py) or `PostgresStore` (postgres.py), which build the two objects, open and migrate
the catalogue, and nothing else.
"""

from __future__ import annotations

from .access import Access
from .calibrations import Calibrations
from .checking import Checking
from .clusters import Clusters
from .dialect import Sql
from .embedding_models import EmbeddingModels
from .erasing import Erasing
from .model_cards import ModelCards
from .people import People
from .person_text import TextSearch
from .photos import Photos
from .privacy import Privacy
from .saving import Saving

__all__ = ["SqlStore"]


class SqlStore(
    Saving,
    Photos,
    EmbeddingModels,
    People,
    Clusters,
    Erasing,
    Privacy,
    Access,
    Calibrations,
    ModelCards,
    Checking,
):
    """`Store` over a database's `sql` and its search `text`."""

    def __init__(self, sql: Sql, text: TextSearch) -> None:
        self.sql = sql
        self.text = text

    def compact(self) -> None:
        """Rewrite the storage so deleted data is gone from the files, not only unlinked."""
        self.sql.compact()

    def close(self) -> None:
        """Release connections and files."""
        self.sql.close()
