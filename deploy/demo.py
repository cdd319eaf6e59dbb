"""The demo: a data directory with a central service and a kiosk pointing at it.

Run by ``deploy/demo.sh``. It makes ``demo-data/`` (kept between runs), starts
``central serve`` on 127.0.0.1, then the kiosk. Without a display it says so, runs the
kiosk under Xvfb, saves a screenshot of the attract screen and names it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"


def make_demo_data(root: Path, port: int) -> Path:
    """Create (once) the central data directory and the kiosk config; return the config."""
    central = root / "central"
    subprocess.run([BIN / "central", "init", "--data", str(central)], check=True)
    config = root / "kiosk.toml"
    if not config.exists():
        config.write_text(
            "# Demo kiosk: data under demo-data/kiosk, the demo service on loopback.\n"
            'data_dir = "kiosk"\n'
            f'server_url = "http://127.0.0.1:{port}"\n', encoding="utf-8")
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


def run_kiosk(config: Path, screenshot: Path) -> int:
    kiosk = [str(BIN / "kiosk"), "--config", str(config), "run"]
    if os.environ.get("DISPLAY"):
        print("demo: starting the kiosk window (close it to stop the demo)")
        return subprocess.run(kiosk).returncode
    print("demo: no display is set ($DISPLAY is empty): running the kiosk under Xvfb")
    if shutil.which("xvfb-run") is None:
        raise SystemExit("demo: xvfb-run is missing: run deploy/setup.sh")
    done = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *kiosk,
                           "--screenshot", str(screenshot)])
    if done.returncode == 0 and screenshot.exists():
        print(f"demo: screenshot of the attract screen saved to {screenshot}")
    return done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO / "demo-data")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--screenshot", type=Path,
                        default=REPO / "screenshots" / "demo-attract.png")
    args = parser.parse_args()
    config = make_demo_data(args.data, args.port)
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([BIN / "central", "serve", "--data", str(args.data / "central"),
                               "--port", str(args.port)])
    try:
        wait_for_health(url, server)
        print(f"demo: central service answering at {url}")
        return run_kiosk(config, args.screenshot)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
