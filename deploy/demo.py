"""The demo: a data directory with a central service and a kiosk pointing at it.

Run by ``deploy/demo.sh``. It makes ``demo-data/`` (kept between runs), starts
``central serve`` on 127.0.0.1, then the kiosk. With a display, the kiosk opens for a
person to use. Without one it says so and shows the kiosk's main job by itself: it
starts the same private virtual microphone the tests use, feeds it speech made by
espeak-ng, runs ``kiosk walkthrough`` under Xvfb in English and in Arabic (a whole
defender session, sealed and submitted), leaves a screenshot of every screen, and
then opens each sealed manifest with the demo team key and prints it: what the vetting
team will see. Then a visitor's walkthrough plays one of the demo stories (``kiosk
demo-stories`` makes them, signed with a demo publishing key it pins).

The service and the kiosk run as ``python -m ...`` with the interpreter running this
script, so the demo works from whatever environment it was started in (``.venv`` when
run by ``deploy/demo.sh``), with this checkout's code first on their path.
"""

from __future__ import annotations

import argparse
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


def make_identity(path: Path) -> str:
    """Create (once) a post-quantum identity file; return its recipient (age1pq1...)."""
    from sync.envelope import format_identity_file, parse_identity_file
    from sync.envelope.mlkem import MlkemIdentity

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(format_identity_file(MlkemIdentity.generate()))
    (identity,) = parse_identity_file(path.read_text(encoding="utf-8"))
    return str(identity.recipient())


def make_demo_data(root: Path, port: int) -> Path:
    """Create (once) the central data directory, the demo keys and the kiosk config.

    The vetting team's and the escrow identity are post-quantum (mlkem768x25519), as
    every real key is. In the demo they sit in demo-data/team/ so that a tester can open
    what the kiosk sealed; in real use they live on the vetting workstations and
    offline, never on a kiosk.
    """
    central = root / "central"
    subprocess.run([*CENTRAL, "init", "--data", str(central)], check=True, env=child_env())
    team = make_identity(root / "team" / "vetting-team.key")
    escrow = make_identity(root / "team" / "escrow.key")
    config = root / "kiosk.toml"
    if not config.exists():
        config.write_text(
            "# Demo kiosk: data under demo-data/kiosk, the demo service on loopback,\n"
            "# sealing to the demo vetting team and escrow keys (post-quantum).\n"
            'data_dir = "kiosk"\n'
            f'server_url = "http://127.0.0.1:{port}"\n'
            f'recipients = ["{team}", "{escrow}"]\n'
            "\n# A window that closes, with a cursor: this is a demo on a desktop, not a\n"
            "# kiosk in a hall (kiosk_mode = true is the default for real kiosks).\n"
            "[display]\nkiosk_mode = false\n", encoding="utf-8")
    if not (root / "kiosk" / "stories" / "catalog.json").exists():
        # Stories for visitors until the vetting team publishes real ones: spoken by
        # espeak-ng, signed with a demo publishing key that this pins in the config.
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


def show_manifest(manifest: Path, team_key: Path) -> None:
    """Open a sealed manifest with the demo team key and print it, as a vetter sees it."""
    import json

    from sync.envelope import open_bytes, parse_identity_file

    identities = parse_identity_file(team_key.read_text(encoding="utf-8"))
    document = json.loads(open_bytes(manifest.read_bytes(), identities))
    print(f"demo: the sealed manifest {manifest.name}, opened with {team_key}:")
    print(json.dumps(document, indent=2, ensure_ascii=False))


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
            manifest = Path(done.stdout.split("sealed manifest at ", 1)[1].split(";")[0])
            show_manifest(manifest, data / "team" / "vetting-team.key")
        # A visitor too: browse, filter, and a published story played to its end.
        shots = screenshots / "visitor"
        done = subprocess.run(
            ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *KIOSK, "--config",
             str(config), "walkthrough", "--visitor", "--screenshots", str(shots)],
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
        if os.environ.get("DISPLAY"):
            return run_kiosk(config)
        return run_walkthroughs(config, args.data, args.screenshots,
                                args.languages or ["en", "ar"])
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
