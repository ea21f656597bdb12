"""dlib's embedder under a name no calibration table is shipped for: a model nobody
calibrated, as an operator's own model is until `iddetective calibrate` has run."""

from __future__ import annotations

from iddetective.faces.pipeline import DlibResnetEmbedder

__all__ = ["RenamedEmbedder"]


class RenamedEmbedder(DlibResnetEmbedder):
    """dlib's ResNet, named `dlib-renamed`."""

    name = "dlib-renamed"
