"""Folders and files only mailflow's own user may read.

On the embedded defaults the database and the maildir live in ``var/``;
a welcome email in the maildir carries a single-use enrolment link, so
another local user who could read it could set up their own authenticator
for someone not yet enrolled.  What mailflow creates there is therefore
0700 (folders) and 0600 (files), whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def make_private_folder(path: Path) -> None:
    """Create ``path`` and any missing parents, each 0700.  A folder that
    already exists is left as it is: it may be shared on purpose."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_FOLDER)
        except FileExistsError:
            continue  # another process made it first
        # mkdir's mode is reduced by the umask; say it again without.
        folder.chmod(PRIVATE_FOLDER)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists, so whatever fills
    it later (SQLite, which gives its WAL and shared-memory files the
    database file's mode) starts from a private file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
