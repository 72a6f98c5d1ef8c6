"""A directory of adapter versions with an atomic `current` pointer, and the Redis signal to workers.

    <registry>/v0001/adapter_config.json, adapter_model.safetensors, training_report.json, gate.json
    <registry>/v0002/...
    <registry>/current -> v0002          (relative symlink, swapped atomically with os.replace)
    <registry>/registry.json             {"history": ["v0001", "v0002"]}: versions in service, oldest first

`model.loading.resolve_adapter` already prefers `<registry>/current`. A registry whose root also holds adapter
files directly (the adapter shipped before versioning) treats them as the bottom of the history: rolling back past
the first version removes `current`, which puts the root's adapter back in service.

Workers learn about a change over Redis: `SET model.keys.ADAPTER_CURRENT <path>` (for workers that start later)
and `PUBLISH model.keys.ADAPTER_RELOAD_CHANNEL <path>` (running workers reload between batches).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CURRENT = "current"
STATE_FILE = "registry.json"
ROOT_LABEL = "(root)"  # the adapter stored directly in the registry folder
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (nothing to roll back to, a candidate without adapter files...)."""


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").exists()


@dataclass
class AdapterRegistry:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # --- reading ------------------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def history(self) -> list[str]:
        state = self.root / STATE_FILE
        if state.exists():
            return list(json.loads(state.read_text()).get("history", []))
        current = self.current_version()
        return [current] if current else []

    def current_version(self) -> str | None:
        link = self.root / CURRENT
        if link.is_symlink():
            return Path(os.readlink(link)).name
        return None

    def path_of(self, version: str) -> Path:
        return (self.root if version == ROOT_LABEL else self.root / version).resolve()

    def current_path(self) -> Path | None:
        """The adapter in service: `current`'s target, else an adapter stored at the root, else None."""
        v = self.current_version()
        if v:
            return self.path_of(v)
        return self.root.resolve() if is_adapter_dir(self.root) else None

    def current_label(self) -> str | None:
        return self.current_version() or (ROOT_LABEL if is_adapter_dir(self.root) else None)

    def next_version(self) -> str:
        existing = self.versions()
        n = int(existing[-1][1:]) + 1 if existing else 1
        return f"v{n:04d}"

    def rollback_target(self) -> str | None:
        """The version that `rollback` would put in service (ROOT_LABEL = the root's adapter, None = nothing)."""
        hist = self.history()
        if not hist:
            raise RegistryError(f"nothing to roll back: no version of {self.root} has been promoted")
        if len(hist) >= 2:
            return hist[-2]
        if is_adapter_dir(self.root):
            return ROOT_LABEL
        raise RegistryError(f"nothing to roll back to: {hist[-1]} is the only version ever promoted in {self.root}")

    # --- writing ------------------------------------------------------------------------------------------------
    def add(self, candidate: Path, extra_files: dict[str, str] | None = None) -> str:
        """Copy an adapter folder in as the next version (written to a temp folder, then renamed)."""
        candidate = Path(candidate)
        if not is_adapter_dir(candidate):
            raise RegistryError(f"{candidate} holds no adapter (adapter_config.json missing)")
        self.root.mkdir(parents=True, exist_ok=True)
        version = self.next_version()
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; workers may run as another user
            for f in candidate.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            for f in tmp.iterdir():  # safetensors may be written private (0600): readable by the workers too
                f.chmod(0o644)
            os.rename(tmp, self.root / version)  # fails if a concurrent promotion took the name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def set_current(self, version: str | None) -> None:
        """Point `current` at `version` atomically (None / ROOT_LABEL removes the link: the root adapter serves)."""
        link = self.root / CURRENT
        if version in (None, ROOT_LABEL):
            if link.is_symlink():
                link.unlink()
            return
        if not is_adapter_dir(self.root / version):
            raise RegistryError(f"{self.root / version} is not an adapter version")
        tmp = self.root / f".{CURRENT}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(version, tmp)  # relative: the registry folder can move
        os.replace(tmp, link)  # rename(2) is atomic: a reader sees the old or the new target, never neither

    def _write_history(self, history: list[str]) -> None:
        state = self.root / STATE_FILE
        tmp = state.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"history": history}, indent=2))
        os.replace(tmp, state)

    def promote(self, candidate: Path, extra_files: dict[str, str] | None = None) -> str:
        version = self.add(candidate, extra_files)
        history = self.history()
        self.set_current(version)
        self._write_history([*history, version])
        log.info("promoted %s as %s", candidate, self.root / version)
        return version

    def rollback(self) -> str:
        """Put the previously served version back in service; returns it (ROOT_LABEL for the root adapter)."""
        target = self.rollback_target()
        history = self.history()
        self.set_current(target)
        self._write_history(history[:-1])
        log.info("rolled back %s from %s to %s", self.root, history[-1], target)
        return target


def notify_workers(redis_url: str, adapter_path: Path) -> int:
    """SET the adapter in service and PUBLISH it to running workers; returns how many subscribers got it."""
    import redis

    from model import keys

    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.set(keys.ADAPTER_CURRENT, str(adapter_path))
        pipe.publish(keys.ADAPTER_RELOAD_CHANNEL, str(adapter_path))
        _, receivers = pipe.execute()
        return int(receivers)
    finally:
        client.close()
