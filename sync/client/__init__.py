"""The kiosk's side of the sync, without the kiosk: enrolment, heartbeat, tus uploads,
the signed index and its receipt (httpx). ``kiosk`` drives it with its own outbox
through :class:`sync.client.push.Outbox`; this package never imports ``kiosk``.

Modules: ``http`` (one request with explicit timeouts and an overall deadline),
``tus`` (create, HEAD, checksummed PATCH chunks, resume), ``enrol`` (enrolment and
heartbeat), ``submit`` (the index and its receipt), ``push`` (one pass over an outbox),
``errors`` (how failures are sorted), ``backoff`` (the worker's waits).
"""
