"""The search text of people (`person_text`): what a store's text search does, whichever
database keeps it (`sqlite_text.py`: FTS5 with the trigram tokenizer; `postgres_text.py`: a
GIN trigram index). people.py decides what goes in it and merges what a search finds."""

from __future__ import annotations

__all__ = ["Match", "TextSearch"]

#: A row of the search text that matched: (person id, field, value, rank).
Match = tuple[str, str, str, int]


class TextSearch:
    """A store's search text: its rows are (folded form, field, value) of a person's name,
    aliases and handles; a search ranks a match in tiers: the whole value, its start, a later
    word's start, anywhere."""

    def insert(self, person_id: str, rows: list[tuple[str, str, str]]) -> None:
        """Add the person's (form, field, value) rows."""
        raise NotImplementedError

    def delete(self, person_id: str) -> None:
        """Remove the person's rows."""
        raise NotImplementedError

    def matches(self, form: str, want: int) -> list[Match]:
        """Up to `want` rows containing `form`, best rank first, shortest first in a rank."""
        raise NotImplementedError

    def condition(self, form: str) -> tuple[str, str]:
        """(condition on a `person_text` row, its parameter): the row holds `form`."""
        raise NotImplementedError
