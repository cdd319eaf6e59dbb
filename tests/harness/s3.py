"""A private S3 endpoint for tests: moto's real HTTP server (``ThreadedMotoServer``) on
127.0.0.1, which boto3 reaches over loopback like any S3 store. No in-process mocking:
the code under test builds an ordinary boto3 client against ``endpoint_url``.

moto 5.2 differs from S3 in ways the tests and sync/central/storage/s3_objects.py work
around (each is named where it matters):

* UploadPart (and CompleteMultipartUpload) to an aborted or unknown upload answers 500
  Internal Server Error (a KeyError inside moto) rather than 404 NoSuchUpload;
* ListParts paging treats ``PartNumberMarker`` as an index into the part list, not a
  part number, so pages skip parts when the numbers have gaps;
* the minimum part size is read from ``S3_UPLOAD_PART_MIN_SIZE`` once, when moto is
  imported. This harness refuses to run with it lowered: the code under test must work
  with S3's real 5 MiB minimum, and every test here runs at that minimum;
* moto checks neither ``x-amz-checksum-sha256`` nor ``Content-MD5`` on uploads (it
  stores the claimed value), so a store-side refusal of damaged bytes cannot be seen
  against moto; the wrapper hashes bytes itself before sending;
* completing an aborted or unknown upload also answers 500 (S3: 404 NoSuchUpload), and
  completing an upload a second time answers 200 again (S3 does so only for a while);
* ``ThreadedMotoServer.stop()`` closes the listening socket (werkzeug's serve_forever
  does on shutdown): a stopped endpoint refuses connections. A store that accepts and
  never answers is a plain listening socket (:func:`black_hole`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REAL_MIN_PART_SIZE = 5 * 1024 * 1024
# The moto setting is fixed at import, so check the environment before importing it.
if int(os.environ.get("S3_UPLOAD_PART_MIN_SIZE", REAL_MIN_PART_SIZE)) != REAL_MIN_PART_SIZE:
    raise RuntimeError("S3_UPLOAD_PART_MIN_SIZE is lowered: the S3 tests must run at "
                       "S3's real 5 MiB minimum part size")

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto.s3 import models as moto_s3_models  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

# Dummy credentials: moto accepts any; real ones must never be needed or read.
ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass
class S3Endpoint:
    """A running moto server: where it listens and the credentials to use."""

    server: ThreadedMotoServer
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    startup_seconds: float
    _admin: Any = None

    def admin_client(self) -> Any:
        """A plain boto3 client for set-up and inspection (not the code under test);
        made once, as a new boto3 session costs about 0.3 s of model loading."""
        if self._admin is None:
            self._admin = self._make_admin()
        return self._admin

    def _make_admin(self) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"},
                          retries={"total_max_attempts": 2, "mode": "standard"}))


def start_moto() -> S3Endpoint:
    """Start a moto server on a free loopback port (port 0: the kernel picks one)."""
    # Imported as a constant by moto.s3.models: this is the value moto enforces.
    if moto_s3_models.S3_UPLOAD_PART_MIN_SIZE != REAL_MIN_PART_SIZE:
        raise RuntimeError("moto was imported with a lowered minimum part size")
    began = time.monotonic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Endpoint(server=server, endpoint_url=f"http://{host}:{port}",
                      access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY,
                      region=REGION, startup_seconds=time.monotonic() - began)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint URL whose socket accepts connections (the kernel completes them from
    the backlog) but never reads or answers: a hung store, for timeout tests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """One moto server for the whole session (about 0.2 s to start on this machine)."""
    endpoint = start_moto()
    try:
        yield endpoint
    finally:
        endpoint.server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[str]:
    """A fresh, empty bucket for one test; emptied and removed afterwards so the
    session's server does not keep every test's megabytes in memory."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    client = s3_endpoint.admin_client()
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
