"""Indexing: plan photo jobs, analyse them with a runner (local or the fleet), store them."""

__all__: list[str] = []
