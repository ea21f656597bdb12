"""Distances, calibrated rates and search by photo."""

__all__: list[str] = []
