"""The resume journal: what it records, what a restart sees, who may use an entry."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from satchel.sdk.journal import Journal, UploadKey, manifest_digest
from satchel.services.artifacts import EntryIn
from satchel.services.artifacts import manifest_digest as server_digest

KEY = UploadKey("http://127.0.0.1:9", "kappa", "p", "ds", "d" * 64)
A, B = "a" * 64, "b" * 64


def test_records_survive_a_new_journal_instance(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.start(KEY, 7)
    j.object_done(KEY, A)
    j.multipart_started(KEY, B, "up-1", 5)
    j.part_done(KEY, B, 1, "e1", 5)
    j.part_done(KEY, B, 3, "e3", 2)
    j.close()
    state = Journal(tmp_path / "journal.db").load(KEY)
    assert state is not None
    assert state.pending_id == 7 and state.objects == {A}
    assert state.multipart[B].upload_id == "up-1"
    assert state.multipart[B].parts == {1: ("e1", 5), 3: ("e3", 2)}
    assert state.resume_hint() == {
        "pending_id": 7, "uploaded": [A],
        "multipart": [{"sha256": B, "upload_id": "up-1", "part_size": 5, "parts_done": [1, 3]}]}


def test_other_keys_are_separate_and_clear_forgets(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    other = UploadKey(KEY.host, KEY.team, KEY.project, KEY.name, "e" * 64)
    j.start(KEY, 1)
    j.object_done(KEY, A)
    assert j.load(other) is None
    j.clear(KEY)
    assert j.load(KEY) is None
    j.object_done(KEY, A)  # no entry: nothing recorded
    assert j.load(KEY) is None


def test_a_new_pending_version_or_upload_id_drops_the_old_records(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.start(KEY, 1)
    j.object_done(KEY, A)
    j.multipart_started(KEY, B, "up-1", 5)
    j.part_done(KEY, B, 1, "e1", 5)
    j.multipart_started(KEY, B, "up-1", 5)  # the same upload: parts kept
    state = j.load(KEY)
    assert state is not None and state.multipart[B].parts == {1: ("e1", 5)}
    j.multipart_started(KEY, B, "up-2", 5)  # restarted upload: its parts start empty
    state = j.load(KEY)
    assert state is not None and state.multipart[B].parts == {} and state.objects == {A}
    j.start(KEY, 2)  # the server started another pending version: nothing carries over
    state = j.load(KEY)
    assert state is not None and state.pending_id == 2
    assert state.objects == frozenset() and state.multipart == {}
    j.object_done(KEY, B)  # a finished multipart object leaves the multipart table
    state = j.load(KEY)
    assert state is not None and state.objects == {B} and state.multipart == {}


HOLDER = """
import sys, time
from pathlib import Path
from satchel.sdk.journal import Journal, UploadKey
j = Journal(Path(sys.argv[1]))
key = UploadKey("http://127.0.0.1:9", "kappa", "p", "ds", "d" * 64)
with j.claim(key) as owned:
    print("owned" if owned else "busy", flush=True)
    sys.stdin.readline()
"""


def test_one_process_at_a_time_owns_an_entry(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "owned"
        j = Journal(db)
        with j.claim(KEY) as owned:
            assert owned is False
    finally:
        holder.communicate("\n", timeout=30)  # the holder exits: the kernel drops its lock
    with j.claim(KEY) as owned:
        assert owned is True
    j.close()


def test_client_digest_equals_the_servers() -> None:
    rows = [("b/x.txt", hashlib.sha256(b"x").hexdigest(), 1, None),
            ("a.txt", hashlib.sha256(b"a").hexdigest(), 1, None),
            ("ref", None, 0, "s3://elsewhere/thing")]
    assert manifest_digest(rows) == server_digest([EntryIn(p, n, s, r) for p, s, n, r in rows])


def test_a_journal_that_cannot_be_written_stops_journaling_instead_of_failing(
        tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    j.start(KEY, 1)
    j._conn.close()  # e.g. the disk filled up: every statement now fails
    j.object_done(KEY, A)  # no exception: the upload this describes goes on
    assert j.broken and j.load(KEY) is None
