"""Where photos come from: paths and manifests, URLs, import files."""

__all__: list[str] = []
