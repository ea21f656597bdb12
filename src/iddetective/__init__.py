"""ID-Detective: self-hosted face search. Index photos, then find people by photo.

The library's front door is `Catalogue` (one data directory); see docs/contracts.md.
"""

from __future__ import annotations

from .catalogue import Catalogue
from .errors import AmbiguousPerson, BadImage, IDDetectiveError, NotFound, UsageError

__all__ = ["AmbiguousPerson", "BadImage", "Catalogue", "IDDetectiveError", "NotFound", "UsageError"]
__version__ = "0.1.0"
