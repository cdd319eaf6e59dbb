"""`kiosk status` tells staff whether new recordings are sealed post-quantum."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sync.envelope import X25519Identity
from sync.envelope.mlkem import MlkemIdentity


def _status(tmp_path: Path, recipients: list[str]) -> dict:
    config = tmp_path / "kiosk.toml"
    # A mix is refused at load unless the config says it is meant (issue 8).
    mixed = len({r.startswith("age1pq1") for r in recipients}) > 1
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nrecipients = {json.dumps(recipients)}\n'
                      + ("allow_classic_recipients = true\n" if mixed else ""))
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), "status",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["sealing"]


@pytest.mark.parametrize(("kinds", "post_quantum", "phrase"), [
    (["pq", "pq"], True, "all post-quantum"),
    (["pq", "x25519"], False, "NOT post-quantum: 1 classic"),
    (["x25519"], False, "NOT post-quantum"),
    ([], False, "recording is disabled"),
])
def test_status_reports_post_quantum_sealing(tmp_path: Path, kinds: list[str],
                                             post_quantum: bool, phrase: str) -> None:
    make = {"pq": MlkemIdentity.generate, "x25519": X25519Identity.generate}
    recipients = [str(make[k]().recipient()) for k in kinds]
    sealing = _status(tmp_path, recipients)
    assert sealing["post_quantum"] is post_quantum
    assert sealing["recipients"] == len(kinds)
    assert phrase in sealing["summary"]
