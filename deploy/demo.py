"""The demo: a data directory with a central service, a vetting team and a kiosk.

Run by ``deploy/demo.sh``. It makes ``demo-data/`` (kept between runs): the service's
data (``central/``), the vetting team's home (``vet/``: ``vet keygen`` made its
post-quantum team key, the escrow key and the Ed25519 publishing key, each protected
with the demo passphrase below), and the kiosk (``kiosk.toml``, ``kiosk/``), which
seals to the team and escrow keys, pins the publishing key, and is enrolled with the
service. Demo stories (``kiosk demo-stories``: espeak-ng, signed with the team's
publishing key) stand in until the team publishes, and are on the service too.

With a display, the kiosk opens for a person to use. Without one it says so and shows
the whole loop by itself: the same private virtual microphone the tests use, fed with
espeak-ng speech; ``kiosk walkthrough`` under Xvfb in English and in Arabic (a whole
defender session, sealed and submitted, a screenshot of every screen); ``kiosk sync
--once`` (the service's signed receipts verified); ``vet pull`` (each part checked
against the queue's SHA-256, and here also byte for byte against the kiosk's file);
``vet show`` (each manifest, decrypted on the team's side: what the vetting team sees);
``vet publish`` of the English testimony (normalised, signed into a new catalog);
``kiosk sync --once`` again (the kiosk verifies the catalog with its pinned key and
downloads the story); and a visitor's walkthrough that plays the new story.

The service, the kiosk and the vet tool run as ``python -m ...`` with the interpreter
running this script, so the demo works from whatever environment it was started in
(``.venv`` when run by ``deploy/demo.sh``), with this checkout's code first on their
path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
#: The two programs, as modules of the running interpreter's environment.
CENTRAL = [sys.executable, "-m", "sync.central"]
KIOSK = [sys.executable, "-m", "kiosk"]


def child_env() -> dict[str, str]:
    """This environment, with the checkout first on the children's module path too."""
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


#: The demo's passphrase for the team's keys. Real keys get a real one, typed at the
#: terminal (or VET_PASSPHRASE in the team's own scripts).
DEMO_PASSPHRASE = "demo passphrase: never use for real keys"
#: scrypt work factor of the demo's key files (age -p uses 18; the demo starts faster).
DEMO_WORK_FACTOR = "15"
VET = [sys.executable, "-m", "sync.vet"]


def vet_env(root: Path) -> dict[str, str]:
    return {**child_env(), "VET_HOME": str(root / "vet"), "VET_PASSPHRASE": DEMO_PASSPHRASE,
            "VET_ESCROW_PASSPHRASE": DEMO_PASSPHRASE}


def run_vet(root: Path, *args: str) -> str:
    """A ``vet`` command as the demo's vetting team; its output (it exits 0 or we stop)."""
    done = subprocess.run([*VET, *args], env=vet_env(root), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"demo: vet {args[0]} failed ({done.returncode})")
    return done.stdout


def lines_by_key(text: str) -> dict[str, str]:
    """``key: value`` lines (what ``vet`` prints for scripts)."""
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in text.splitlines() if ": " in line)}


def make_team_keys(root: Path) -> dict[str, str]:
    """``vet keygen`` once: the team, escrow and publishing keys; returns their public
    halves. The escrow identity is printed once by keygen and not kept in the vet home;
    the demo keeps that (protected) printout in demo-data/team/escrow.age, where a real
    team would print it or store it offline."""
    public = root / "team" / "public-keys.txt"
    if public.exists():
        return lines_by_key(public.read_text(encoding="utf-8"))
    out = run_vet(root, "keygen", "--work-factor", DEMO_WORK_FACTOR)
    armor = out[out.index("-----BEGIN AGE ENCRYPTED FILE-----"):
                out.index("-----END AGE ENCRYPTED FILE-----")]
    (root / "team").mkdir(parents=True, exist_ok=True)
    write_private(root / "team" / "escrow.age", armor + "-----END AGE ENCRYPTED FILE-----\n")
    found = lines_by_key(out)
    keys = {k: found[k] for k in ("recipient", "escrow", "publisher")}
    public.write_text("".join(f"{k}: {v}\n" for k, v in keys.items()), encoding="utf-8")
    return keys


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def put_aside_old_layout(root: Path) -> None:
    """demo-data/ made by an older demo (no vet home) is moved aside, not deleted."""
    if (root / "kiosk.toml").exists() and not (root / "team" / "public-keys.txt").exists():
        aside = root.with_name(f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        root.rename(aside)
        print(f"demo: {root} was made by an older demo; moved aside to {aside}")


def make_demo_data(root: Path, port: int) -> Path:
    """Create (once) the service's data, the team's keys and the kiosk config.

    The team's keys are post-quantum (mlkem768x25519), as every real key is. In real use
    the vet home lives on the vetting team's workstation, never on a kiosk.
    """
    put_aside_old_layout(root)
    central = root / "central"
    keys = make_team_keys(root)
    subprocess.run([*CENTRAL, "init", "--data", str(central)], check=True, env=child_env(),
                   stdout=subprocess.DEVNULL)
    subprocess.run([*CENTRAL, "set-publisher-key", "--data", str(central),
                    keys["publisher"]], check=True, env=child_env(), stdout=subprocess.DEVNULL)
    config = root / "kiosk.toml"
    if not config.exists():
        config.write_text(
            "# Demo kiosk: data under demo-data/kiosk, the demo service on loopback,\n"
            "# sealing to the demo vetting team and escrow keys (post-quantum).\n"
            'data_dir = "kiosk"\n'
            f'server_url = "http://127.0.0.1:{port}"\n'
            f'recipients = ["{keys["recipient"]}", "{keys["escrow"]}"]\n'
            "\n# A window that closes, with a cursor: this is a demo on a desktop, not a\n"
            "# kiosk in a hall (kiosk_mode = true is the default for real kiosks).\n"
            "[display]\nkiosk_mode = false\n", encoding="utf-8")
    if not (root / "kiosk" / "stories" / "catalog.json").exists():
        # Stories for visitors until the team publishes: spoken by espeak-ng, signed
        # with the team's publishing key (demo-stories signs with demo-publisher.key
        # beside the config, and pins its verify key in the config).
        signing_key = root / "demo-publisher.key"
        if not signing_key.exists():
            from sync.signing import format_signing_key_file
            from sync.vet.keys import read_signing_key

            key = read_signing_key((root / "vet" / "keys" / "publisher.age").read_bytes(),
                                   DEMO_PASSPHRASE)
            write_private(signing_key, format_signing_key_file(key))
        subprocess.run([*KIOSK, "--config", str(config), "demo-stories"], check=True,
                       env=child_env())
    return config


def wait_for_health(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"demo: the central service exited ({server.returncode});"
                             " is the port already in use?")
        if time.monotonic() > deadline:
            raise SystemExit("demo: the central service did not answer in time")
        time.sleep(0.2)


def run_kiosk(config: Path) -> int:
    print("demo: starting the kiosk window (close it to stop the demo)")
    return subprocess.run([*KIOSK, "--config", str(config), "run"], env=child_env()).returncode


def last_line(command: list[str]) -> str:
    """Run a ``central`` command that makes a code or token; it prints it last."""
    done = subprocess.run(command, check=True, env=child_env(), capture_output=True,
                          text=True)
    return done.stdout.strip().splitlines()[-1].strip()


def enrol_demo_kiosk(root: Path, config: Path, url: str) -> None:
    """Enrol the demo kiosk with the demo service once: a one-time code, then
    ``kiosk enrol``, which makes the device key and pins the service's key."""
    if (root / "kiosk" / "device.json").exists():
        return
    code = last_line([*CENTRAL, "enrol-code", "--data", str(root / "central"),
                      "--name", "demo-kiosk"])
    subprocess.run([*KIOSK, "--config", str(config), "enrol", "--server", url,
                    "--code", code], check=True, env=child_env())
    print(f"demo: the kiosk is enrolled with the central service at {url}")


def vet_login(root: Path, url: str) -> None:
    """The demo vetter: a token made once by the service's administrator, then
    ``vet login`` (which keeps it in the vet home, mode 0600)."""
    if (root / "vet" / "config.json").exists():
        return
    token = last_line([*CENTRAL, "vetter", "add", "--data", str(root / "central"),
                       "demo-vetter"])
    run_vet(root, "login", "--server", url, "--token", token)


def publish_demo_stories(root: Path, url: str) -> None:
    """Put the demo catalog and its audio on the service (once), as the team would, so
    that the team's next catalog carries them on and kiosks take it as newer."""
    token = json.loads((root / "vet" / "config.json").read_text(encoding="utf-8"))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    if httpx.get(f"{url}/api/v1/catalog", headers=headers, timeout=30).status_code == 200:
        return
    stories = root / "kiosk" / "stories"
    data = (stories / "catalog.json").read_bytes()
    for story in json.loads(data)["stories"]:
        audio = (stories / story["url"].split("/")[-1]).read_bytes()
        httpx.put(f"{url}/api/v1/{story['url']}", content=audio, timeout=60,
                  headers={**headers, "Content-Type": "audio/ogg",
                           "X-Content-SHA256": hashlib.sha256(audio).hexdigest()}
                  ).raise_for_status()
    signature = (stories / "catalog.json.sig").read_text(encoding="utf-8").strip()
    httpx.put(f"{url}/api/v1/catalog", json={"catalog": data.decode("utf-8"),
                                             "signature": signature},
              headers=headers, timeout=60).raise_for_status()
    print(f"demo: the demo stories are on the service (catalog version"
          f" {json.loads(data)['version']})")


def kiosk_sync(config: Path) -> int:
    done = subprocess.run([*KIOSK, "--config", str(config), "sync", "--once"],
                          env=child_env(), capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        print("demo: kiosk sync --once did not finish", file=sys.stderr)
    return done.returncode


def vet_the_submissions(config: Path, root: Path, manifests: list[Path]) -> str | None:
    """``kiosk sync --once``, then the team's side: pull, check, show, publish one.

    Returns the published story's id, or None if a step failed (it says which)."""
    if kiosk_sync(config) != 0:
        return None
    sys.stdout.write(run_vet(root, "pull"))
    for manifest in manifests:
        submission_id = manifest.parent.name
        pulled = root / "vet" / "pulled" / submission_id
        for sealed in sorted(manifest.parent.glob("*.age")):
            if (pulled / sealed.name).read_bytes() != sealed.read_bytes():
                print(f"demo: {submission_id}/{sealed.name}: the pulled copy differs",
                      file=sys.stderr)
                return None
        print(f"demo: in the queue and pulled: {submission_id}, byte-identical to the"
              " kiosk's sealed files")
        print(f"demo: the sealed manifest of {submission_id}, as `vet show` opens it on"
              " the team's workstation:")
        sys.stdout.write(run_vet(root, "show", submission_id))
    published = lines_by_key(run_vet(root, "publish", manifests[0].parent.name, "--title",
                                     "A defender's walkthrough", "--anonymous"))
    print(f"demo: vet publish: story {published['story']}, {published['catalog']}")
    if kiosk_sync(config) != 0:
        return None
    return published["story"]


def run_walkthroughs(config: Path, data: Path, screenshots: Path,
                     languages: list[str]) -> int:
    """Headless: the virtual microphone, speech, and a walkthrough per language."""
    from tests.harness.pulse import VirtualAudio
    from tests.harness.speech import make_speech

    print("demo: no display is set ($DISPLAY is empty): running a whole defender session"
          " under Xvfb, with a virtual microphone fed with espeak-ng speech")
    if shutil.which("xvfb-run") is None:
        raise SystemExit("demo: xvfb-run is missing: run deploy/setup.sh")
    audio = VirtualAudio()
    audio.start()
    manifests: list[Path] = []
    try:
        for language in languages:
            speech = make_speech(audio.dir / f"speech-{language}.wav", language, repeat=2)
            feeding = threading.Event()

            def feed(wav: Path = speech, stop: threading.Event = feeding) -> None:
                # Speech into the microphone for as long as the walkthrough runs.
                while not stop.is_set():
                    audio.play_into_mic(wav).wait()

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            shots = screenshots / language
            done = subprocess.run(
                ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *KIOSK, "--config",
                 str(config), "walkthrough", "--screenshots", str(shots), "--lang",
                 language], env={**child_env(), **audio.env}, capture_output=True,
                text=True)
            feeding.set()
            feeder.join(30)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
            if done.returncode != 0:
                print(f"demo: the {language} walkthrough failed", file=sys.stderr)
                return done.returncode
            print(f"demo: screenshots of every screen ({language}) saved in {shots}")
            manifests.append(
                Path(done.stdout.split("sealed manifest at ", 1)[1].split(";")[0]))
        story = vet_the_submissions(config, data, manifests)
        if story is None:
            return 1
        # A visitor too: browse, filter, and the story just published played to its end.
        shots = screenshots / "visitor"
        done = subprocess.run(
            ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *KIOSK, "--config",
             str(config), "walkthrough", "--visitor", "--story", story, "--screenshots",
             str(shots)],
            env={**child_env(), **audio.env}, capture_output=True, text=True)
        sys.stdout.write(done.stdout)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-3000:])
            print("demo: the visitor walkthrough failed", file=sys.stderr)
            return done.returncode
        print(f"demo: screenshots of the visitor's screens saved in {shots}")
    finally:
        audio.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO / "demo-data")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--screenshots", type=Path, default=REPO / "screenshots" / "demo",
                        help="where the headless demo leaves its screenshots")
    parser.add_argument("--lang", action="append", dest="languages",
                        help="a walkthrough language (repeatable; default: en and ar)")
    args = parser.parse_args()
    config = make_demo_data(args.data, args.port)
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([*CENTRAL, "serve", "--data", str(args.data / "central"),
                               "--port", str(args.port)], env=child_env())
    try:
        wait_for_health(url, server)
        print(f"demo: central service answering at {url}")
        enrol_demo_kiosk(args.data, config, url)
        vet_login(args.data, url)
        publish_demo_stories(args.data, url)
        if os.environ.get("DISPLAY"):
            return run_kiosk(config)
        return run_walkthroughs(config, args.data, args.screenshots,
                                args.languages or ["en", "ar"])
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
