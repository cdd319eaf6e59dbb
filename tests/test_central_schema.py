"""Schemathesis against the service's own OpenAPI document, in-process (ASGI).

For every operation it generates requests (valid and invalid) with a real device token
and a real vetter token, and checks: no 5xx, every status code declared, and every
response matching its declared schema, headers and content type.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sync import catalog as catalog_format
from sync.central.app import create_app
from sync.central.core import (
    Settings,
    hash_secret,
    init,
    make_enrol_code,
    normalise_code,
    set_publisher_key,
)
from sync.envelope import X25519Identity
from sync.signing import SigningKey
from sync.wire import encode_metadata
from tests.harness.central import (
    configure_store,
    index_body,
    new_submission_id,
    signed_index,
    tus_upload,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
EXAMPLES = 30
VETTER_PATHS = ("/api/v1/queue", "/api/v1/submissions/{submission_id}/parts/{name}",
                "/api/v1/submissions/{submission_id}/state", "/api/v1/catalog")
#: Vetter-only operations among paths that devices may also read (GET).
VETTER_WRITES = ("PUT /api/v1/stories/{story_id}.ogg", "PUT /api/v1/catalog")


@schemathesis.serializer("application/offset+octet-stream", "audio/ogg")
def _octets(ctx: Any, value: Any) -> bytes:
    # tus PATCH bodies and story audio are raw bytes; the schema says "string, binary".
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _service(tmp_path: Path) -> tuple[Any, dict[str, str]]:
    data = tmp_path / "central"
    configure_store(data)
    init(data)
    app = create_app(data, Settings(max_upload_bytes=1024 * 1024))
    svc = app.state.central
    code = make_enrol_code()
    normalised = normalise_code(code)
    assert normalised is not None
    svc.meta.add_enrol_code(hash_secret(normalised), None, time.time(), time.time() + 3600)
    vetter = "idrvet_schemathesis-" + "x" * 30
    svc.meta.add_vetter("vet-0000000000000001", "schema", hash_secret(vetter), time.time())
    key = SigningKey.generate()
    client = TestClient(app)
    body = client.post("/api/v1/devices/enrol",
                       json={"code": code, "public_key": str(key.verify_key)}).json()
    # One real submission, so the vetter routes have something to find.
    sid = new_submission_id()
    tus_upload(client, body["token"], sid, "a1.age", b"ciphertext" * 100)
    signed = signed_index(key, body["device_id"], sid, {"a1.age": b"ciphertext" * 100})
    assert client.post("/api/v1/submissions", json=index_body(signed), headers={
        "Authorization": f"Bearer {body['token']}"}).status_code == 201
    # An open upload, so PATCH/HEAD/DELETE also meet a real one (offsets, checksums...).
    reply = client.post("/api/v1/uploads/", headers={
        "Authorization": f"Bearer {body['token']}", "Tus-Resumable": "1.0.0",
        "Upload-Length": "100000",
        "Upload-Metadata": encode_metadata({"submission_id": sid, "part": "a2.age"})})
    # A published story and a signed catalog, so the public routes find real ones.
    publisher = SigningKey.generate()
    set_publisher_key(svc.meta, publisher.verify_key)
    audio = b"OggS" + b"\x00" * 400
    vet = {"Authorization": f"Bearer {vetter}"}
    assert client.put("/api/v1/stories/story-1.ogg", content=audio, headers={
        **vet, "Content-Type": "audio/ogg",
        "X-Content-SHA256": hashlib.sha256(audio).hexdigest()}).status_code == 201
    data = catalog_format.build(catalog_format.Catalog(
        version=1, issued_at="2026-11-28T10:00:00Z", recipients=(
            str(X25519Identity.generate().recipient()),), prompts=("journey",),
        stories=(catalog_format.Story(
            id="story-1", title="A story", display_name="Anonymous", country="KE",
            region="Africa", themes=("land",), language="en", duration_s=1.0,
            transcript="", audio_sha256=hashlib.sha256(audio).hexdigest(), size=len(audio),
            url="stories/story-1.ogg"),)))
    assert client.put("/api/v1/catalog", headers=vet, json={
        "catalog": data.decode(), "signature": catalog_format.sign(data, publisher)}
    ).status_code == 201
    fixed = {"upload_id": reply.headers["location"].rsplit("/", 1)[1],
             "submission_id": sid, "name": "a1.age", "story_id": "story-1"}
    return app, {"device": body["token"], "vetter": vetter}, fixed


def _runner(operation: Any, token: str, mode: GenerationMode, failures: list[str],
            seen: Counter[str], path_parameters: dict[str, str] | None) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode,
                                      path_parameters=path_parameters))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def run(case: schemathesis.Case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {token}"  # tokens are tested elsewhere
        if case.path.startswith("/api/v1/uploads") and case.method.upper() != "OPTIONS":
            headers.setdefault("Tus-Resumable", "1.0.0")
        case.headers = headers
        try:
            response = case.call_and_validate(checks=CHECKS)
            seen[f"{case.method} {response.status_code}"] += 1
        except Exception as exc:  # collect, so one run reports every operation
            failures.append(f"{case.method} {case.path}: {type(exc).__name__}: "
                            f"{str(exc)[:600]}")

    return run


# schemathesis' own pytest plugin does not run under pytest 9 yet, so each operation's
# Hypothesis strategy is driven here directly: the same generation and the same checks.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_schema(tmp_path: Path, mode: GenerationMode) -> None:
    app, tokens, fixed = _service(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen: Counter[str] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        vetter = (f"{operation.method.upper()} {operation.path}" in VETTER_WRITES
                  or (operation.path in VETTER_PATHS and operation.path != "/api/v1/catalog"))
        token = tokens["vetter" if vetter else "device"]

        names = {p.name for p in operation.path_parameters}
        variants: list[dict[str, str] | None] = [None]
        if names and operation.method.upper() != "DELETE":
            # Random ids (404s) and the real ones (the interesting answers).
            variants.append({k: v for k, v in fixed.items() if k in names})
        for path_parameters in variants:
            try:
                _runner(operation, token, mode, failures, seen, path_parameters)()
            except Unsatisfiable:
                # Nothing here can be made invalid (e.g. OPTIONS, health, fixed ids).
                assert mode is GenerationMode.NEGATIVE
    assert operations >= 9
    print(f"schemathesis {mode.value}: {sum(seen.values())} requests,"
          f" {dict(sorted(seen.items()))}")
    assert not failures, "\n\n".join(failures[:5])
