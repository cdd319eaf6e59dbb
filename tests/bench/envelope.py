"""Benchmark of the age envelope: throughput against the bounds, and writer memory.

Run:  .venv/bin/python tests/bench/envelope.py [--json PATH] [--size-mib N] [--rounds R]

On one N MiB file (default 512), side by side in one run and interleaved
round by round (the machine is shared and noisy; the best round counts):

* encrypt and decrypt with ``sync.envelope`` (``encrypt_stream`` /
  ``decrypt_stream``, what the CLI runs),
* (a) a bare ChaCha20-Poly1305 loop over the same 64 KiB chunks, with the
  same file reads and /dev/null writes: the bound for Python,
* (b) Debian's ``age`` tool on the same file,
* for information: the streaming writer (which also keeps a running SHA-256
  of the ciphertext), with its disk writes discarded, and the seekable reader.

Output goes to /dev/null so the disk does not dominate. Then, in a fresh
subprocess, the peak RSS growth while N MiB go through the streaming writer
to a real file. Targets: >= 0.9x the bare loop and >= 1.0x age, both ways;
RSS growth < 2 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sync.envelope import (
    EnvelopeWriter,
    X25519Identity,
    decrypt_stream,
    encrypt_stream,
    format_identity_file,
    open_sealed,
)
from sync.envelope.stream import CHUNK_SIZE, ENC_CHUNK_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from envelope_pq import _table as pq_table  # noqa: E402  (a sibling script, not a package)
from envelope_pq import measure_pq  # noqa: E402

MIB = 1024 * 1024


def bare_encrypt(src: Path) -> None:
    """The tightest Python loop: read a chunk, seal it, write it."""
    aead = ChaCha20Poly1305(os.urandom(32))
    plain = bytearray(CHUNK_SIZE)
    plain_view = memoryview(plain)
    sealed = memoryview(bytearray(ENC_CHUNK_SIZE))
    counter = 0
    with open(src, "rb", buffering=0) as fin, open(os.devnull, "wb", buffering=0) as fout:
        while True:
            n = fin.readinto(plain)
            last = n < CHUNK_SIZE
            out = sealed[: n + 16]
            nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
            aead.encrypt_into(nonce, plain_view[:n], None, out)
            fout.write(out)
            counter += 1
            if last:
                return


def bare_decrypt(src: Path, key: bytes, payload_start: int) -> None:
    """The same loop the other way (the header is skipped, not parsed)."""
    aead = ChaCha20Poly1305(key)
    sealed = bytearray(ENC_CHUNK_SIZE)
    sealed_view = memoryview(sealed)
    plain = memoryview(bytearray(CHUNK_SIZE))
    counter = 0
    size = src.stat().st_size
    with open(src, "rb", buffering=0) as fin, open(os.devnull, "wb", buffering=0) as fout:
        fin.seek(payload_start)
        left = size - payload_start
        while left > 0:
            n = fin.readinto(sealed)
            left -= n
            nonce = counter.to_bytes(11, "big") + (b"\x01" if left == 0 else b"\x00")
            out = plain[: n - 16]
            aead.decrypt_into(nonce, sealed_view[:n], None, out)
            fout.write(out)
            counter += 1


def ours_encrypt(src: Path, recipient: str) -> None:
    with open(src, "rb") as fin, open(os.devnull, "wb") as fout:
        encrypt_stream(fin, fout, [recipient])


def ours_decrypt(src: Path, identity: X25519Identity) -> None:
    with open(src, "rb") as fin, open(os.devnull, "wb") as fout:
        decrypt_stream(fin, fout, identities=[identity])


def writer_encrypt(src: Path, recipient: str, scratch: Path) -> None:
    """The streaming writer with its disk writes discarded (CPU cost only)."""
    target = scratch / "writer-bench.age"
    writer = EnvelopeWriter(target, [recipient])
    writer._pwrite = lambda fd, data, offset: len(data)  # noqa: SLF001 - test seam
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fin:
        while n := fin.readinto(buf):
            writer.write(view[:n])
    writer.close()
    target.unlink()


def seekable_decrypt(src: Path, identity: X25519Identity) -> None:
    buf = bytearray(CHUNK_SIZE)
    with open_sealed(src, identities=[identity]) as reader, open(os.devnull, "wb") as fout:
        while n := reader.readinto(buf):
            fout.write(memoryview(buf)[:n])


def age_encrypt(src: Path, recipient: str) -> None:
    subprocess.run(["age", "-r", recipient, "-o", os.devnull, str(src)], check=True)


def age_decrypt(src: Path, key_file: Path) -> None:
    subprocess.run(["age", "-d", "-i", str(key_file), "-o", os.devnull, str(src)], check=True)


_RSS_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from sync.envelope import EnvelopeWriter

    def status(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    src, target, recipient = sys.argv[1], sys.argv[2], sys.argv[3]
    # Pieces like a recorder's (small) and a bulk copy's (large), cycled.
    sizes = [3_000, 17_000, 65_536, 1_048_576, 777]
    buf = bytearray(max(sizes))
    view = memoryview(buf)
    writer = EnvelopeWriter(target, [recipient])
    with open(src, "rb", buffering=0) as fin:
        fin.readinto(view[:4096])
        writer.write(view[:4096])  # every buffer and code path touched once
        # Reset the high-water mark to the current RSS (Linux "5" > clear_refs), so
        # that a peak reached while importing cannot hide the writer's growth.
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        before_hwm, before_rss = status("VmHWM"), status("VmRSS")
        step = 0
        while n := fin.readinto(view[: sizes[step % len(sizes)]]):
            writer.write(view[:n])
            step += 1
    sealed = writer.close()
    print(json.dumps({
        "before_hwm": before_hwm, "after_hwm": status("VmHWM"),
        "before_rss": before_rss, "after_rss": status("VmRSS"),
        "ciphertext_bytes": sealed.size,
    }))
    """
)


def measure_rss(src: Path, recipient: str, scratch: Path) -> dict[str, float]:
    target = scratch / "rss.age"
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(src), str(target), recipient],
        capture_output=True,
        text=True,
        check=True,
    )
    target.unlink()
    figures = json.loads(done.stdout)
    figures["peak_growth_mib"] = (figures["after_hwm"] - figures["before_rss"]) / MIB
    return figures


def best_times(cases: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():  # interleaved, so drift hits every case alike
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pq-mib", type=int, default=64,
                        help="payload for the hybrid vs X25519 throughput (default 64)")
    args = parser.parse_args()
    if shutil.which("age") is None:
        print("error: the age tool is not on PATH (apt-get install age)", file=sys.stderr)
        return 1
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="envelope-bench-", dir="/var/tmp") as tmp:
        scratch = Path(tmp)
        plain = scratch / "plain.bin"
        with open(plain, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(MIB))
        identity = X25519Identity.generate()
        recipient = str(identity.recipient())
        key_file = scratch / "key.txt"
        key_file.write_text(format_identity_file(identity))
        sealed = scratch / "sealed.age"
        with open(plain, "rb") as fin, open(sealed, "wb") as fout:
            encrypt_stream(fin, fout, [recipient])
        with open(sealed, "rb") as fh:
            from sync.envelope.header import read_header
            from sync.envelope.reader import unlock
            from sync.envelope.stream import payload_key

            header, _ = read_header(fh)
            fh.seek(header.size)
            nonce = fh.read(16)
        file_key = unlock(header, identities=[identity])
        key = payload_key(file_key, nonce)
        start = header.size + 16
        for path in (plain, sealed):  # into the page cache
            with open(path, "rb") as fh:
                while fh.read(8 * MIB):
                    pass

        enc = best_times(
            {
                "bare loop": lambda: bare_encrypt(plain),
                "sync.envelope": lambda: ours_encrypt(plain, recipient),
                "age 1.1": lambda: age_encrypt(plain, recipient),
                "streaming writer (+SHA-256)": lambda: writer_encrypt(plain, recipient, scratch),
            },
            args.rounds,
        )
        dec = best_times(
            {
                "bare loop": lambda: bare_decrypt(sealed, key, start),
                "sync.envelope": lambda: ours_decrypt(sealed, identity),
                "age 1.1": lambda: age_decrypt(sealed, key_file),
                "seekable reader": lambda: seekable_decrypt(sealed, identity),
            },
            args.rounds,
        )
        rss = measure_rss(plain, recipient, scratch)

    def mibps(seconds: float) -> float:
        return size / MIB / seconds

    results: dict[str, object] = {
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "encrypt_seconds": enc,
        "decrypt_seconds": dec,
        "ratios": {
            "encrypt_vs_bare": enc["bare loop"] / enc["sync.envelope"],
            "encrypt_vs_age": enc["age 1.1"] / enc["sync.envelope"],
            "decrypt_vs_bare": dec["bare loop"] / dec["sync.envelope"],
            "decrypt_vs_age": dec["age 1.1"] / dec["sync.envelope"],
        },
        "writer_rss": rss,
    }
    print(f"sync.envelope benchmark: {args.size_mib} MiB, best of {args.rounds} interleaved rounds")
    print(f"{'':30} {'seconds':>8} {'MiB/s':>8} {'vs bare':>8} {'vs age':>8}")
    for title, table in (("encrypt", enc), ("decrypt", dec)):
        print(title)
        for name, seconds in table.items():
            print(
                f"  {name:28} {seconds:8.3f} {mibps(seconds):8.0f}"
                f" {table['bare loop'] / seconds:7.2f}x {table['age 1.1'] / seconds:7.2f}x"
            )
    print(
        f"streaming writer peak RSS growth over {args.size_mib} MiB:"
        f" {rss['peak_growth_mib']:.2f} MiB (VmHWM {rss['before_hwm'] / MIB:.1f}"
        f" -> {rss['after_hwm'] / MIB:.1f} MiB)"
    )
    # Post-quantum (issue 5): wrap/unwrap cost, header size, throughput with two
    # hybrid recipients against two X25519 ones, measured in this same run.
    pq = measure_pq(args.pq_mib)
    results["post_quantum"] = pq
    print()
    print(f"post-quantum hybrid (mlkem768x25519), {args.pq_mib} MiB in memory")
    print(pq_table(pq))
    ratios = results["ratios"]
    assert isinstance(ratios, dict)
    verdicts = {
        "encrypt >= 0.9x bare": ratios["encrypt_vs_bare"] >= 0.9,
        "decrypt >= 0.9x bare": ratios["decrypt_vs_bare"] >= 0.9,
        "encrypt >= 1.0x age": ratios["encrypt_vs_age"] >= 1.0,
        "decrypt >= 1.0x age": ratios["decrypt_vs_age"] >= 1.0,
        "writer RSS growth < 2 MiB": rss["peak_growth_mib"] < 2.0,
        "hybrid wrap < 1 ms": pq["meets_wrap_target"],
        "hybrid throughput within 2%": pq["meets_throughput_target"],
    }
    results["targets_met"] = verdicts
    print("targets: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in verdicts.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
