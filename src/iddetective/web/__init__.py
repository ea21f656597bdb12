"""The HTTP API and web pages (FastAPI): `create_app(ServerSettings(data_dir))`."""

from .analysis import AnalysisLimits
from .app import ServerSettings, create_app, first_admin_key

__all__ = ["AnalysisLimits", "ServerSettings", "create_app", "first_admin_key"]
