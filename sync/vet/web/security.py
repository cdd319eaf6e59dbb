"""The gate in front of every request of ``vet serve``.

The page runs on 127.0.0.1, but a browser is a confused deputy: any site the vetter
visits can make it send requests to localhost. So, in this order:

1. ``Host`` must be ``127.0.0.1:PORT`` or ``localhost:PORT``. A DNS-rebinding page
   (``evil.example`` resolving to 127.0.0.1) sends its own name: 421.
2. Fetch metadata: a ``Sec-Fetch-Site`` other than ``same-origin`` (or ``none`` for
   a navigation the vetter typed or pasted) is another site's request: 403. An
   ``Origin`` header, when present, must be ours: 403. A state-changing request must
   carry our ``Origin`` (every browser sends it on a POST), so a form posted from
   elsewhere, or a script without it, is refused: 403.
3. Authentication for everything under ``/api/``: the session cookie (HttpOnly,
   SameSite=Strict, set by ``POST /api/session`` in exchange for the login token
   printed at start) or the login token as a Bearer header: else 401.

The page itself and its static files hold no data, so they need no token (the token
reaches the page in the URL's fragment, which browsers never send to the server).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Sent on every response: nothing is cached, nothing is framed, no referrer leaks.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " media-src 'self'; connect-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"),
}
SAFE_METHODS = frozenset({"GET", "HEAD"})
SESSION_PATH = "/api/session"


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None
          ) -> JSONResponse:
    response = JSONResponse({"error": code, "detail": detail}, status_code=status,
                            headers=headers)
    response.headers.update(SECURITY_HEADERS)
    return response


@dataclass
class Gate:
    """What the server lets in: its port, its login token, its session secret."""

    port: int
    #: Printed once at start; exchanged for the cookie (or sent as a Bearer header).
    login_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: The cookie's value: a different secret, so the printed token never sits in
    #: the browser's cookie store.
    session_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def cookie_name(self) -> str:
        # Cookies are scoped to the host, not the port: name it after the port so two
        # `vet serve` on one machine do not overwrite each other's.
        return f"vet_session_{self.port}"

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/#token={self.login_token}"

    # -- checks --------------------------------------------------------------------------
    def check_host(self, request: Request) -> Response | None:
        host = request.headers.get("host", "").lower()
        if host not in self.hosts:
            return error(421, "bad_host",
                         f"this server answers only to 127.0.0.1:{self.port}")
        return None

    def check_origin(self, request: Request) -> Response | None:
        is_api = request.url.path.startswith("/api/")
        site = request.headers.get("sec-fetch-site")
        allowed_sites = {"same-origin"} if is_api else {"same-origin", "none"}
        if site is not None and site.lower() not in allowed_sites:
            return error(403, "cross_site", "requests from other sites are refused")
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return error(403, "bad_origin", "requests from other origins are refused")
        if request.method not in SAFE_METHODS and origin is None:
            return error(403, "bad_origin", "a state-changing request must carry our Origin")
        return None

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.login_token.encode())

    def authenticated(self, request: Request) -> bool:
        cookie = request.cookies.get(self.cookie_name)
        if cookie is not None and hmac.compare_digest(cookie.encode(),
                                                      self.session_secret.encode()):
            return True
        return self.bearer_ok(request)

    def set_session_cookie(self, response: Response) -> None:
        # No Max-Age: a session cookie, gone with the browser; the secret itself dies
        # with the server. No Secure: the page is plain http on loopback.
        response.set_cookie(self.cookie_name, self.session_secret, httponly=True,
                            samesite="strict", path="/")

    def refuse(self, request: Request) -> Response | None:
        """The response that refuses ``request``, or None to let it through."""
        refused = self.check_host(request) or self.check_origin(request)
        if refused is not None:
            return refused
        path = request.url.path
        if path.startswith("/api/") and path != SESSION_PATH and not self.authenticated(
                request):
            return error(401, "unauthorized", "log in with the link `vet serve` printed",
                         headers={"WWW-Authenticate": "Bearer"})
        return None


class GateMiddleware:
    """Pure ASGI (no body buffering, streaming and disconnects work as without it):
    refuse what :meth:`Gate.refuse` refuses, add :data:`SECURITY_HEADERS` to the rest."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.gate.refuse(Request(scope))
        if refused is not None:
            await refused(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
