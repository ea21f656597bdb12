"""Finding people: the query language and text folding for substring search."""

__all__: list[str] = []
