"""Worker processes: crash-isolating pools whose workers die with their parent."""

__all__: list[str] = []
