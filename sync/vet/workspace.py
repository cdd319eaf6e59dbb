"""The vet tool's home folder: where each thing lives, and how it is written.

::

    home/
      config.json            {"server": url, "token": "idrvet_..."}   (0600)
      keys/team.age          the team's PQ identity, passphrase-protected (age -p form)
      keys/publisher.age     the Ed25519 publishing key, passphrase-protected
      keys/recipients.json   {"recipients": ["age1pq1... team", "age1pq1... escrow"]}
      queue.json             the last queue the service listed (for `vet list` offline)
      pulled/<id>/<part>     ciphertext exactly as the service holds it
      pulled/<id>/state.json {"parts": {name: sha256}, "complete": bool}
      decisions/<id>.json    local notes (the note never leaves the workstation)
      published/catalog.json + catalog.json.sig   the last catalog this team signed
      published/stories.json {"stories": {story_id: submission_id}}
      published/prompts.json {"prompts": [...]}

Everything is written the durable way (temporary file, fsync, rename, fsync of the
folder), so a crash leaves the old or the new file, never half of one. Secrets (config
with the token, keys, notes) are created 0600 and their folders 0700. Plaintext of a
testimony is never written here: there is no function for it.

Submission ids and part names come from the service; before any of them becomes a path
they are checked with :mod:`sync.wire` (a compromised service must not be able to write
``../../.bashrc``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sync.durable import write_durably
from sync.wire import is_part_name, is_submission_id

__all__ = ["DEFAULT_HOME", "Home", "WorkspaceError", "atomic_write"]

DEFAULT_HOME = Path("~/.local/share/idr-vet")


class WorkspaceError(Exception):
    """The home folder holds something missing or unreadable; the message says what."""


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path``: temp file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, data, mode=mode)


def _dump(document: Any) -> bytes:
    return (json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


class Home:
    """Paths and small documents of one home folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @classmethod
    def from_env(cls, given: str | os.PathLike[str] | None) -> Home:
        """``--home`` if given, else ``VET_HOME``, else the default."""
        if given:
            return cls(Path(given))
        env = os.environ.get("VET_HOME")
        return cls(Path(env) if env else DEFAULT_HOME)

    # -- layout ------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def team_key(self) -> Path:
        return self.keys_dir / "team.age"

    @property
    def publisher_key(self) -> Path:
        return self.keys_dir / "publisher.age"

    @property
    def recipients_path(self) -> Path:
        return self.keys_dir / "recipients.json"

    @property
    def queue_path(self) -> Path:
        return self.root / "queue.json"

    @property
    def pulled_dir(self) -> Path:
        return self.root / "pulled"

    @property
    def decisions_dir(self) -> Path:
        return self.root / "decisions"

    @property
    def published_dir(self) -> Path:
        return self.root / "published"

    @property
    def catalog_path(self) -> Path:
        return self.published_dir / "catalog.json"

    @property
    def catalog_sig_path(self) -> Path:
        return self.published_dir / "catalog.json.sig"

    @property
    def stories_path(self) -> Path:
        return self.published_dir / "stories.json"

    @property
    def prompts_path(self) -> Path:
        return self.published_dir / "prompts.json"

    def submission_dir(self, submission_id: str) -> Path:
        if not is_submission_id(submission_id):
            raise WorkspaceError(f"not a submission id: {submission_id[:60]!r}")
        return self.pulled_dir / submission_id

    def part_path(self, submission_id: str, name: str) -> Path:
        if not is_part_name(name):
            raise WorkspaceError(f"not a part name: {name[:60]!r}")
        return self.submission_dir(submission_id) / name

    def decision_path(self, submission_id: str) -> Path:
        if not is_submission_id(submission_id):
            raise WorkspaceError(f"not a submission id: {submission_id[:60]!r}")
        return self.decisions_dir / f"{submission_id}.json"

    # -- folders -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the home (0700: it holds the token, keys and notes)."""
        for folder in (self.root, self.keys_dir, self.pulled_dir, self.decisions_dir,
                       self.published_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.keys_dir, self.decisions_dir):
            os.chmod(folder, 0o700)

    @contextlib.contextmanager
    def lock(self, *, wait_s: float = 30.0) -> Iterator[None]:
        """One changing command at a time in this home (``vet serve`` and the CLI may run
        side by side): an advisory lock on ``home/.lock``, waited for up to ``wait_s``."""
        self.ensure()
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WorkspaceError("another vet command is working in this home;"
                                             " try again when it is done") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    # -- documents ---------------------------------------------------------------------
    def read_json(self, path: Path, default: Any = None) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from None
        try:
            return json.loads(text)
        except ValueError:
            raise WorkspaceError(f"{path} is not valid JSON") from None

    def write_json(self, path: Path, document: Any, *, secret: bool = False) -> None:
        atomic_write(path, _dump(document), mode=0o600 if secret else 0o644)

    def write_secret(self, path: Path, data: bytes) -> None:
        atomic_write(path, data, mode=0o600)

    # config
    def config(self) -> dict[str, str]:
        doc = self.read_json(self.config_path)
        if not isinstance(doc, dict) or not isinstance(doc.get("server"), str) \
                or not isinstance(doc.get("token"), str):
            raise WorkspaceError("not logged in: run `vet login --server URL --token T` first")
        return {"server": doc["server"], "token": doc["token"]}

    def save_config(self, server: str, token: str) -> None:
        self.ensure()
        self.write_json(self.config_path, {"server": server, "token": token}, secret=True)

    # recipients
    def recipients(self) -> list[str]:
        doc = self.read_json(self.recipients_path)
        if doc is None:
            raise WorkspaceError("no keys/recipients.json: run `vet keygen` first")
        items = doc.get("recipients") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items \
                or not all(isinstance(r, str) for r in items):
            raise WorkspaceError(f"{self.recipients_path} holds no recipients")
        return list(items)

    def save_recipients(self, recipients: list[str]) -> None:
        self.write_json(self.recipients_path, {"recipients": list(recipients)})

    # prompts
    def prompts(self) -> list[str] | None:
        doc = self.read_json(self.prompts_path)
        if doc is None:
            return None
        items = doc.get("prompts") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise WorkspaceError(f"{self.prompts_path} holds no prompt list")
        return list(items)

    def save_prompts(self, prompts: list[str]) -> None:
        self.write_json(self.prompts_path, {"prompts": list(prompts)})

    # story -> submission map (which testimony each public story came from)
    def story_map(self) -> dict[str, str]:
        doc = self.read_json(self.stories_path, {"stories": {}})
        items = doc.get("stories") if isinstance(doc, dict) else None
        if not isinstance(items, dict):
            raise WorkspaceError(f"{self.stories_path} is damaged")
        return {str(k): str(v) for k, v in items.items()}

    def save_story_map(self, mapping: dict[str, str]) -> None:
        self.write_json(self.stories_path, {"stories": dict(sorted(mapping.items()))})

    # pulled state
    def pull_state(self, submission_id: str) -> dict[str, Any] | None:
        doc = self.read_json(self.submission_dir(submission_id) / "state.json")
        if doc is None:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("parts"), dict):
            raise WorkspaceError(f"pulled/{submission_id}/state.json is damaged")
        return doc

    def save_pull_state(self, submission_id: str, parts: dict[str, str],
                        complete: bool) -> None:
        self.write_json(self.submission_dir(submission_id) / "state.json",
                        {"parts": dict(parts), "complete": bool(complete)})

    def is_pulled(self, submission_id: str) -> bool:
        try:
            state = self.pull_state(submission_id)
        except WorkspaceError:
            return False
        return bool(state and state.get("complete") is True)

    def pulled_ids(self) -> list[str]:
        if not self.pulled_dir.is_dir():
            return []
        return sorted(p.name for p in self.pulled_dir.iterdir()
                      if p.is_dir() and is_submission_id(p.name))

    # decisions
    def add_decision(self, submission_id: str, entry: dict[str, Any]) -> None:
        path = self.decision_path(submission_id)
        doc = self.read_json(path, {"decisions": []})
        if not isinstance(doc, dict) or not isinstance(doc.get("decisions"), list):
            doc = {"decisions": []}
        doc["decisions"].append(entry)
        self.decisions_dir.mkdir(parents=True, exist_ok=True)
        self.write_json(path, doc, secret=True)
