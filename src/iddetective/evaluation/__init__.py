"""Measuring accuracy: `iddetective eval`, its report, the detector study."""

__all__: list[str] = []
