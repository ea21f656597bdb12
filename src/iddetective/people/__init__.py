"""People beyond one photo: clustering, discovery of new people, privacy operations."""

__all__: list[str] = []
