"""``vet serve``: the vetting workflow as a local web page (127.0.0.1 only).

``create_app(backend, gate)`` builds the FastAPI app; ``serve(home, port=...)`` unlocks
the keys, binds loopback, prints the login link and runs it. See ``app`` for the routes
and ``security`` for what every request must pass.
"""

from __future__ import annotations

from .app import create_app
from .backend import Backend, BackendError, PreparedPreview, PublishForm, VetBackend
from .security import Gate
from .server import DEFAULT_PORT, ServeError, add_arguments, run, serve, serve_vet

__all__ = ["DEFAULT_PORT", "Backend", "BackendError", "Gate", "PreparedPreview",
           "PublishForm", "ServeError", "VetBackend", "add_arguments", "create_app", "run",
           "serve", "serve_vet"]
