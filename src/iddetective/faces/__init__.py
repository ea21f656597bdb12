"""The face pipeline: decode, detect, align, embed."""

__all__: list[str] = []
