"""Folders that refuse writes, for tests of commands writing where they cannot."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def read_only_folder(folder: Path, files: dict[str, str] | None = None) -> Iterator[Path]:
    """``folder`` made read-only, holding ``files`` (name -> text): a read-only tmpfs as root (root ignores
    modes), else mode 555; writable again (unmounted) afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
        for name, text in (files or {}).items():
            (folder / name).write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        for name, text in (files or {}).items():
            (folder / name).write_text(text)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
