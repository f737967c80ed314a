"""What users call, and the wire protocol they see.

``CascadeClient`` (gRPC client of the ``cascade`` model), its result type, and the protocol's
error types and markers (:mod:`client.errors`). Serving imports this package for the protocol
constants; nothing here imports another project package.
"""
from client.cascade import CascadeClient, CascadeResult, default_url, format_confidence, main, save_png

__all__ = ["CascadeClient", "CascadeResult", "default_url", "format_confidence", "main", "save_png"]
