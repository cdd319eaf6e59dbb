"""The deploy files: shellcheck on every script, Caddy's config, and the install scripts run
for real in a fresh Debian bookworm tree (debootstrap, entered with chroot), twice, then
`systemd-analyze verify` on the units they installed there.

Why verify inside the installed tree (``--root``): verify checks that each ExecStart
binary exists, and /opt/idefendrights*/venv/bin/... exist only where install.sh ran. The
units it checks are byte-for-byte the files in deploy/ (asserted), so no path is
substituted. About 90 s the first time on a machine (debootstrap, then cached under
/var/cache/idefendrights-test), about 40 s after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.bookworm_tree import CACHE_DIR, cached_tree, fresh_root

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KIOSK_UNIT = "idefendrights-kiosk.service"
CENTRAL_UNIT = "idefendrights-central.service"
#: The scale-out shape's instances (issue 14): idefendrights-central@PORT.
CENTRAL_INSTANCE_UNIT = "idefendrights-central@.service"
# A clean environment inside the chroot: nothing of this machine's pip or Python settings.
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:  # deploy/setup.sh installs them: a missing one is a broken machine
        pytest.fail(f"{tool} is not installed (deploy/setup.sh installs it)")
    return path


def test_shellcheck_passes_on_every_script() -> None:
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert {DEPLOY / "setup.sh", DEPLOY / "kiosk" / "install.sh",
            DEPLOY / "central" / "install.sh"} <= set(scripts)
    done = subprocess.run([need("shellcheck"), *map(str, scripts)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_caddyfile_is_valid_and_formatted(tmp_path: Path) -> None:
    caddyfile = DEPLOY / "central" / "Caddyfile"
    env = {**os.environ, "CENTRAL_DOMAIN": "central.example.org", "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([need("caddy"), "validate", "--adapter", "caddyfile", "--config",
                           str(caddyfile)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    formatted = subprocess.run([need("caddy"), "fmt", str(caddyfile)], capture_output=True,
                               text=True, timeout=60)
    assert formatted.stdout == caddyfile.read_text()
    # The proxy's body limit is the service's default limit, not less.
    from sync.central.core import DEFAULT_MAX_UPLOAD

    assert DEFAULT_MAX_UPLOAD == 2 * 1024**3 and "max_size 2GiB" in caddyfile.read_text()


@dataclass
class Installed:
    root: Path
    #: (script, run number) -> its output; every run exited 0.
    runs: dict[tuple[str, int], str]

    def run(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        return subprocess.run(["chroot", str(self.root), *inner], capture_output=True,
                              text=True, env=CHROOT_ENV, timeout=300)

    def ids(self, name: str) -> tuple[int, int]:
        line = next(x for x in (self.root / "etc/passwd").read_text().splitlines()
                    if x.startswith(f"{name}:"))
        fields = line.split(":")
        return int(fields[2]), int(fields[3])


def _wheelhouse() -> Path:
    """The app's Python dependencies as wheels, built here once (pip's cache makes it
    quick), so the chroot installs offline with --no-index."""
    key = hashlib.sha256((REPO / "constraints.txt").read_bytes()
                         + (REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    wheels = CACHE_DIR / f"wheels-{key}"
    if not (wheels / ".complete").exists():
        shutil.rmtree(wheels, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(wheels), "-c", str(REPO / "constraints.txt"), str(REPO),
                        "setuptools>=68"], check=True, timeout=900, capture_output=True)
        (wheels / ".complete").touch()
    return wheels


def _source_files() -> list[str]:
    """The repo's files as a checkout would have them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (REPO / name).exists()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.skip("the install test needs root (debootstrap, mount, chroot)")
    for tool in ("debootstrap", "chroot", "mount"):
        need(tool)
    packages = [line.strip() for line in (DEPLOY / "kiosk" / "packages.txt").read_text()
                .splitlines() if line.strip() and not line.startswith("#")]
    # caddy too, for `central/install.sh --domain`: the chroot then needs no network.
    tree = cached_tree(packages + ["caddy"])
    wheels = _wheelhouse()
    work = tmp_path_factory.mktemp("bookworm")
    with fresh_root(tree, work) as root:
        src = root / "tmp" / "src"
        src.mkdir(parents=True)
        for name in _source_files():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(wheels, root / "tmp" / "wheels")
        # A swap line as a real system has one: install.sh must turn it off.
        with (root / "etc" / "fstab").open("a") as fstab:
            fstab.write("/dev/sda2 none swap sw 0 0\n")
        runs: dict[tuple[str, int], str] = {}
        scripts = {"kiosk": ["/tmp/src/deploy/kiosk/install.sh", "--server-url",
                             "https://central.example.org"],
                   "central": ["/tmp/src/deploy/central/install.sh", "--domain",
                               "central.example.org"]}
        for number in (1, 2):  # the second run shows the scripts are idempotent
            for name, argv in scripts.items():
                done = subprocess.run(["chroot", str(root), *argv, "--wheelhouse",
                                       "/tmp/wheels", "/tmp/src"], capture_output=True,
                                      text=True, env=CHROOT_ENV, timeout=600)
                assert done.returncode == 0, (name, number, done.stdout[-3000:],
                                              done.stderr[-3000:])
                runs[name, number] = done.stdout + done.stderr
        yield Installed(root, runs)


def test_the_kiosk_install_leaves_user_app_config_and_data(installed: Installed) -> None:
    root = installed.root
    uid, gid = installed.ids("kiosk")
    assert uid < 1000  # a system user
    assert "/usr/sbin/nologin" in (root / "etc/passwd").read_text().split(f"kiosk:x:{uid}")[1]
    config = root / "etc/idefendrights/kiosk.toml"
    st = config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    assert 'server_url = "https://central.example.org"' in config.read_text()
    data = (root / "var/lib/idefendrights").stat()
    assert (data.st_uid, data.st_mode & 0o777) == (uid, 0o700)
    # The kiosk user reads its config (the app starts: `kiosk status` loads and validates
    # it) but cannot change it, nor the app's code.
    status = installed.run("/opt/idefendrights/venv/bin/kiosk", "--config",
                           "/etc/idefendrights/kiosk.toml", "status", "--json", user="kiosk")
    assert status.returncode == 0, status.stderr[-2000:]
    for target in ("/etc/idefendrights/kiosk.toml", "/opt/idefendrights/app/kiosk/cli.py"):
        write = installed.run("sh", "-c", f"echo x >> {target}", user="kiosk")
        assert write.returncode != 0 and "Permission denied" in write.stderr, target
    imported = installed.run("/opt/idefendrights/venv/bin/python", "-c",
                             "import kiosk, kivy, sync.central; print(kiosk.__file__)",
                             user="kiosk")
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == "/opt/idefendrights/app/kiosk/__init__.py"
    # The compiled translations the app reads next to its code.
    assert (root / "opt/idefendrights/app/assets/locale/ar/LC_MESSAGES/kiosk.mo").is_file()


def test_the_kiosk_install_enables_units_and_sets_the_system_up(installed: Installed) -> None:
    etc = installed.root / "etc"
    unit = etc / "systemd/system" / KIOSK_UNIT
    assert unit.read_bytes() == (DEPLOY / "kiosk" / KIOSK_UNIT).read_bytes()
    wants = etc / "systemd/system/graphical.target.wants" / KIOSK_UNIT
    assert os.readlink(wants) == f"/etc/systemd/system/{KIOSK_UNIT}"
    assert os.readlink(etc / "systemd/system/default.target").endswith("/graphical.target")
    timesync = etc / "systemd/system/sysinit.target.wants/systemd-timesyncd.service"
    assert os.readlink(timesync).endswith("/systemd-timesyncd.service")
    assert os.readlink(etc / "systemd/system/swap.target") == "/dev/null"  # swap off
    fstab = (etc / "fstab").read_text()
    assert "# swap off for the kiosk: /dev/sda2 none swap sw 0 0" in fstab
    assert fstab.count("/dev/sda2") == 1  # the second run did not comment it twice
    journald = (etc / "systemd/journald.conf.d/idefendrights.conf").read_text()
    assert "SystemMaxUse=200M" in journald


def test_the_central_install_leaves_a_private_data_dir_and_an_enabled_unit(
        installed: Installed) -> None:
    root = installed.root
    uid, _gid = installed.ids("central")
    data = root / "var/lib/idefendrights-central/data"
    st = data.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700)
    key_files = [p for p in data.iterdir() if p.is_file() and "key" in p.name]
    assert key_files and all(p.stat().st_uid == uid for p in key_files)
    # `central init` ran twice and kept the same service key.
    keys = [next(line for line in installed.runs["central", n].splitlines()
                 if line.startswith("idrverify1")) for n in (1, 2)]
    assert keys[0] == keys[1]
    etc = root / "etc"
    unit = etc / "systemd/system" / CENTRAL_UNIT
    assert unit.read_bytes() == (DEPLOY / "central" / CENTRAL_UNIT).read_bytes()
    assert os.readlink(etc / "systemd/system/multi-user.target.wants" / CENTRAL_UNIT) \
        == f"/etc/systemd/system/{CENTRAL_UNIT}"
    assert (etc / "caddy/Caddyfile").read_bytes() == (DEPLOY / "central/Caddyfile").read_bytes()
    assert (etc / "default/caddy").read_text().count("CENTRAL_DOMAIN=") == 1


def test_systemd_analyze_verify_passes_on_every_unit(installed: Installed) -> None:
    units = sorted(DEPLOY.rglob("*.service"))
    assert [u.name for u in units] == [CENTRAL_UNIT, CENTRAL_INSTANCE_UNIT, KIOSK_UNIT]
    for unit in units:
        if "@" in unit.name:
            # The scale-out template is not installed by install.sh (the administrator
            # enables the instances): verified as copied into the installed tree.
            shutil.copy2(unit, installed.root / "etc/systemd/system" / unit.name)
        # The installed copy is the deploy/ file itself (checked above), in a tree where
        # its ExecStart binaries exist.
        assert (installed.root / "etc/systemd/system" / unit.name).read_bytes() \
            == unit.read_bytes()
        done = subprocess.run([need("systemd-analyze"), "verify", f"--root={installed.root}",
                               f"/etc/systemd/system/{unit.name}"],
                              capture_output=True, text=True, timeout=120)
        # verify exits 0 on an unknown key or a bad value but says so: nothing said is clean.
        assert (done.returncode, done.stdout + done.stderr) == (0, ""), unit.name


def test_the_central_unit_is_hardened(installed: Installed) -> None:
    done = subprocess.run([need("systemd-analyze"), "security", "--offline=true",
                           f"--root={installed.root}", "--threshold=20", CENTRAL_UNIT],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    score = float(done.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert score <= 2.0, done.stdout[-3000:]


def test_the_central_instance_unit_is_hardened_as_the_single_one(installed: Installed) -> None:
    template = DEPLOY / "central" / CENTRAL_INSTANCE_UNIT
    shutil.copy2(template, installed.root / "etc/systemd/system" / template.name)
    done = subprocess.run([need("systemd-analyze"), "security", "--offline=true",
                           f"--root={installed.root}", "--threshold=20",
                           "idefendrights-central@8101.service"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    score = float(done.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert score <= 2.0, done.stdout[-3000:]
    # The same sandbox as the single unit: every hardening line of it is in the template.
    single = (DEPLOY / "central" / CENTRAL_UNIT).read_text()
    hardening = single[single.index("# Hardening"):single.index("[Install]")]
    lines = {x for x in hardening.splitlines() if x and not x.startswith("#")}
    assert lines <= set(template.read_text().splitlines())


def test_the_haproxy_config_is_valid_and_never_sticky(tmp_path: Path) -> None:
    """deploy/central/haproxy.cfg passes `haproxy -c` as shipped and as the scale-out
    tests run it (tests/harness/haproxy.py renders it), and balances without stickiness."""
    from tests.harness.haproxy import CONFIG, render_config

    haproxy = need("haproxy")
    rendered = tmp_path / "haproxy.cfg"
    rendered.write_text(render_config(["127.0.0.1:9001", "127.0.0.1:9002"], 9000))
    for config in (CONFIG, rendered):
        done = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    words = [line.split("#")[0].split() for line in CONFIG.read_text().splitlines()]
    settings = {" ".join(w[:2]) if w[0] in ("option", "timeout", "http-check") else w[0]:
                w for w in words if w}
    assert settings["balance"] == ["balance", "roundrobin"]
    assert not {"cookie", "stick-table", "stick", "hash-type"} & set(settings)
    assert "option prefer-last-server" not in settings
    assert settings["option httpchk"] and "/api/v1/health" in settings["http-check send"]
    assert settings["option redispatch"] and int(settings["retries"][1]) >= 1
    assert settings["http-reuse"][1] in ("safe", "never")
    # A slow kiosk's PATCH is not cut: as long as the Caddyfile's 30 minutes.
    assert settings["timeout client"][2] == settings["timeout server"][2] == "30m"


def test_the_central_service_works_under_memory_deny_write_execute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The central unit sets MemoryDenyWriteExecute=yes: here the real `central init` and
    `central serve` run under the same seccomp filter and take a whole submission (enrol,
    tus upload, signed index, receipt, vetter download, audit chain)."""
    import httpx

    from sync.signing import VerifyKey
    from sync.wire import Receipt, SignedDocument
    from tests.harness import central as central_harness

    assert "MemoryDenyWriteExecute=yes" in (DEPLOY / "central" / CENTRAL_UNIT).read_text()
    # The filter bites: a W+X mapping is refused under it (and allowed without it).
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)"
    under = [sys.executable, "-m", "tests.harness.deny_write_execute", "--"]
    refused = subprocess.run([*under, sys.executable, "-c", probe], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    assert subprocess.run([sys.executable, "-c", probe], timeout=60).returncode == 0

    monkeypatch.setattr(central_harness, "CENTRAL", [*under, *central_harness.CENTRAL])
    with central_harness.CentralService(tmp_path / "central") as central:
        # The serving process itself is filtered (mode 2: a seccomp filter).
        assert "Seccomp:\t2" in Path(f"/proc/{central.pid}/status").read_text()
        device_id, token, key = central.enrol_device(name="kiosk")
        sid = central_harness.new_submission_id()
        parts = {"a1.age": os.urandom(300_000), "manifest.json.age": os.urandom(2_000)}
        with httpx.Client(base_url=central.url, timeout=30) as client:
            for name, data in parts.items():
                central_harness.tus_upload(client, token, sid, name, data, chunk=64 * 1024)
            signed = central_harness.signed_index(key, device_id, sid, parts)
            reply = client.post("/api/v1/submissions",
                                json=central_harness.index_body(signed),
                                headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 201, reply.text
            Receipt.verify(SignedDocument(reply.json()["receipt"].encode(),
                                          reply.json()["signature"]),
                           VerifyKey.parse(central.service_key), expect_index=signed)
            vetter = {"Authorization": f"Bearer {central.vetter_token('v')}"}
            got = client.get(f"/api/v1/submissions/{sid}/parts/a1.age", headers=vetter)
            assert got.status_code == 200 and got.content == parts["a1.age"]
        assert central.cli("audit", "verify").startswith("audit chain intact:")
        assert central.running()
