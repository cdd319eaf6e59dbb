"""``vet serve`` in a real browser: Playwright drives Debian's Chromium (no browser
download) through the whole page against the real stack.

Set-up as a vetting team would: ``central serve`` on loopback, ``vet keygen`` (the
publisher key pinned on the service), a kiosk enrolled with ``kiosk enrol`` whose
submissions (sealed by the kiosk's custody code to the team's post-quantum recipient)
go up with ``kiosk sync --once``, then ``vet login`` and ``vet pull``. Then the page,
started with ``vet serve --port 0``, opened at the login link it prints:

* it lists the queue and opens a submission (the decrypted manifest shows);
* the answer plays: the audio element reaches the playing state;
* one submission is rejected with a reason: the service's queue says rejected + reason,
  and the vetter's note is nowhere in the service's data;
* the other is previewed (trimmed) and published: the service's signed catalog lists it;
* nothing in the home folder holds plaintext afterwards.

A screenshot of the page is kept as assets/screenshots/vet-serve.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync import catalog as cat
from sync.envelope import parse_recipient
from tests.harness.central import CentralService
from tests.test_vet_web import every_file, seal_submission

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "assets" / "screenshots" / "vet-serve.png"
PASSPHRASE = "browser test passphrase"
NOTE = "Private note: the speaker names a colleague, check with her first"
TITLE = "Water rights in the valley"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="PyPI playwright is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install"
                                       " chromium)")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"VET_PASSPHRASE": PASSPHRASE, "VET_HOME": str(home),
                "PYTHONPATH": str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                           if env.get("PYTHONPATH") else "")})
    return env


def vet(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sync.vet.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=_env(home))
    assert done.returncode == 0, f"vet {args[0]}: {done.stderr}"
    return done.stdout


def kiosk(config: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, f"kiosk {args[0]}: {done.stderr}"


def lines(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.service = CentralService(root / "central")
        self.home = root / "home"
        keys = lines(vet(self.home, "keygen", "--work-factor", "10"))
        self.publisher = keys["publisher"]
        self.service.cli("set-publisher-key", self.publisher)
        data_dir = root / "kiosk"
        self.config = root / "kiosk.toml"
        self.config.write_text(f'data_dir = "{data_dir}"\n')
        kiosk(self.config, "enrol", "--server", self.service.url, "--code",
              self.service.enrol_code())
        team = parse_recipient(keys["recipient"])
        consent = {"publish_voice": True, "show_name": True, "share_online": True}
        self.to_publish = seal_submission(data_dir, [team], 2, "Wanjiru Kamau",
                                          consent=consent)
        self.to_reject = seal_submission(data_dir, [team], 1, "Anonymous", consent=consent)
        kiosk(self.config, "sync", "--once")
        self.vetter = self.service.vetter_token()
        vet(self.home, "login", "--server", self.service.url, "--token", self.vetter)
        vet(self.home, "pull")
        # One more after the pull: the page's "Pull new" fetches it.
        self.late = seal_submission(data_dir, [team], 1, "Anonymous", consent=consent)
        kiosk(self.config, "sync", "--once")
        self.server: subprocess.Popen[str] | None = None

    def serve(self) -> str:
        self.server = subprocess.Popen(
            [sys.executable, "-m", "sync.vet.cli", "serve", "--home", str(self.home),
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=_env(self.home))
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        assert line.startswith("vet serve: open http://127.0.0.1:"), (
            line + (self.server.stderr.read() if self.server.stderr else ""))
        return line.split()[-1]

    def api(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.service.url}/api/v1{path}", timeout=10,
                         headers={"Authorization": f"Bearer {self.vetter}"})

    def queue(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.api("/queue").json()["submissions"]}

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(10)
        self.service.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    made = Stack(tmp_path)
    try:
        yield made
    finally:
        made.close()


def playing(selector: str) -> str:
    return (f"() => {{ const a = document.querySelector({json.dumps(selector)});"
            " return !!a && !a.paused && a.currentTime > 0; }")


def test_the_page_lists_plays_rejects_and_publishes(stack: Stack, tmp_path: Path) -> None:
    url = stack.serve()
    profile = tmp_path / "chromium-profile"
    with playwright_api.sync_playwright() as p:
        # A profile folder of our own, to look through afterwards for plaintext.
        browser = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=15_000)
            # The token left the address bar; the cookie carries the session now.
            assert "token" not in page.url
            rows = page.locator("#queue tbody tr")
            assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(
                [stack.to_publish, stack.to_reject, stack.late])
            pulled = {r["id"]: r["pulled"] for r in rows.evaluate_all(
                "rs => rs.map(r => ({id: r.dataset.id, pulled: r.cells[4].textContent}))")}
            assert pulled == {stack.to_publish: "yes", stack.to_reject: "yes",
                              stack.late: "no"}

            # Filters: by state (nothing rejected yet), by "not pulled", then all again.
            page.select_option("#filter-state", "rejected")
            page.wait_for_selector("#queue-empty:not([hidden])")
            page.select_option("#filter-state", "")
            page.select_option("#filter-pulled", "no")
            page.wait_for_function("() => document.querySelectorAll('#queue tbody tr').length"
                                   " === 1")
            assert rows.first.get_attribute("data-id") == stack.late
            # "Pull new" fetches it; the not-pulled list is then empty.
            page.click("#pull")
            page.wait_for_selector("#queue-empty:not([hidden])", timeout=15_000)
            assert "Pulled 1 submission" in page.locator("#status").inner_text()
            page.select_option("#filter-pulled", "all")
            page.wait_for_selector(f"#queue tbody tr[data-id='{stack.to_reject}']")

            # Open one: the decrypted manifest, one player per answer; play the first.
            page.click(f"#queue tbody tr[data-id='{stack.to_publish}']")
            page.wait_for_selector("#detail:not([hidden]) audio.part-audio")
            assert page.locator("#detail-id").inner_text() == stack.to_publish
            assert "Wanjiru Kamau" in page.locator("#manifest-summary").inner_text()
            assert page.locator("audio.part-audio").count() == 2
            page.evaluate("document.querySelector('audio.part-audio').play()")
            page.wait_for_function(playing("audio.part-audio"), timeout=15_000)
            page.evaluate("document.querySelector('audio.part-audio').pause()")

            # Reject the other with a reason (and a note that must stay here).
            page.click(f"#queue tbody tr[data-id='{stack.to_reject}']")
            page.wait_for_function(
                f"() => document.querySelector('#detail-id').textContent"
                f" === {json.dumps(stack.to_reject)}")
            page.check("input[name=decision][value=reject]")
            page.select_option("#reason", "risk_to_others")
            page.fill("#note", NOTE)
            page.click("#decide")
            page.wait_for_function(
                "() => document.querySelector('#status').textContent.includes('Recorded')",
                timeout=15_000)
            page.wait_for_selector(
                f"#queue tbody tr[data-id='{stack.to_reject}'][data-state='rejected']")
            entry = stack.queue()[stack.to_reject]
            assert entry["state"] == "rejected" and entry["reason"] == "risk_to_others"

            # Publish the first: preview a trim (in memory), then publish anonymously.
            page.click(f"#queue tbody tr[data-id='{stack.to_publish}']")
            page.wait_for_function(
                f"() => document.querySelector('#detail-id').textContent"
                f" === {json.dumps(stack.to_publish)}")
            page.fill("#title", TITLE)
            page.check("#anonymous")
            page.fill(".trim-start[data-part='0']", "0.1")
            page.click("#preview-btn")
            page.wait_for_function(playing("#preview"), timeout=30_000)
            page.evaluate("document.querySelector('#preview').pause()")
            page.click("#publish")
            page.wait_for_function(
                "() => document.querySelector('#status').textContent.startsWith('Published')",
                timeout=60_000)
            status = page.locator("#status").inner_text()
            page.wait_for_selector(
                f"#queue tbody tr[data-id='{stack.to_publish}'][data-state='published']")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not errors, errors
        finally:
            browser.close()

    # The service's catalog lists the story, signed by the team's publishing key.
    entry = stack.queue()[stack.to_publish]
    assert entry["state"] == "published" and entry["story_id"]
    assert entry["story_id"] in status
    data = stack.api("/catalog").content
    signature = stack.api("/catalog.sig").text
    catalog = cat.verify(data, signature, stack.publisher)
    story = catalog.story(entry["story_id"])
    assert story is not None and story.title == TITLE and story.display_name == "Anonymous"
    audio = stack.api(f"/{story.url}")
    assert audio.status_code == 200 and audio.content[:4] == b"OggS"

    # The note stayed on the workstation; no plaintext in the home folder.
    service_files = list(every_file(stack.service.data_dir))
    assert service_files
    for path in service_files:
        assert NOTE.encode() not in path.read_bytes(), path
    notes = json.loads((stack.home / "decisions" / f"{stack.to_reject}.json").read_text())
    assert notes["decisions"][-1]["note"] == NOTE
    for path in every_file(stack.home):
        data = path.read_bytes()
        assert b"Wanjiru Kamau" not in data, path
        assert b"OpusHead" not in data, path
    # Nor in the browser's profile (no-store: no media cache; autocomplete off: no saved
    # form state). The audio is looked for as 64-byte windows of its plaintext.
    needles = [b"Wanjiru Kamau", "Wanjiru Kamau".encode("utf-16-le"), b"OpusHead",
               NOTE.encode(), NOTE.encode("utf-16-le")]
    for path in every_file(profile):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle[:20]!r} in {path.relative_to(profile)}"

