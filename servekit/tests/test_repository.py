"""The versioned model repository: numbering, the promoted pointer, pruning, readers, crash safety."""

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from servekit.errors import NotFound
from servekit.repository import META_FILE, POINTER_FILE, ModelRepository

WEIGHTS = "weights.bin"


def weights_writer(data: bytes):
    def write(folder: Path) -> None:
        (folder / WEIGHTS).write_bytes(data)

    return write


def write(repo: ModelRepository, model: str = "m", data: bytes | None = None, **meta) -> int:
    data = os.urandom(64) if data is None else data
    return repo.write_version(model, weights_writer(data), {"sha256": hashlib.sha256(data).hexdigest(), **meta})


def hidden_leftovers(series: Path) -> list[str]:
    return sorted(p.name for p in series.iterdir() if p.name.startswith((".staging-", ".trash-", ".tmp-")))


def snapshot(root: Path) -> dict:
    """Every entry under root (and root itself) with its type, size and mtime: any write changes it."""
    if not root.exists():
        return {}
    found = {".": (root.stat().st_mtime_ns, "d", 0)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_mtime_ns, "d" if path.is_dir() else "f", st.st_size)
    return found


# -- 1. round trip ------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    repo = ModelRepository(tmp_path / "repo")
    assert repo.versions("m") == [] and repo.models() == []
    payloads = [os.urandom(100 + i) for i in range(3)]
    numbers = [write(repo, data=p, accuracy=0.9 + i / 100) for i, p in enumerate(payloads)]
    assert numbers == [1, 2, 3]
    assert repo.versions("m") == [1, 2, 3]
    assert repo.models() == ["m"]
    for version, payload in zip(numbers, payloads, strict=True):
        meta = repo.meta("m", version)
        assert meta["version"] == version and meta["model"] == "m"
        assert meta["sha256"] == hashlib.sha256(payload).hexdigest()
        assert (repo.folder("m", version) / WEIGHTS).read_bytes() == payload
        assert repo.folder("m", version) == tmp_path / "repo" / "m" / str(version)
    assert repo.meta("m", 2)["accuracy"] == pytest.approx(0.91)
    assert hidden_leftovers(tmp_path / "repo" / "m") == []

    with pytest.raises(NotFound) as info:
        repo.meta("m", 4)
    assert info.value.status == 404
    assert "[1, 2, 3]" in info.value.message
    with pytest.raises(NotFound):
        repo.meta("other", 1)
    with pytest.raises(NotFound):
        repo.meta("../m", 1)


def test_failed_write_leaves_nothing(tmp_path):
    repo = ModelRepository(tmp_path)
    write(repo)

    def broken(folder: Path) -> None:
        (folder / WEIGHTS).write_bytes(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        repo.write_version("m", broken, {})
    with pytest.raises(TypeError):
        repo.write_version("m", weights_writer(b"x"), {"not json": object()})
    assert repo.versions("m") == [1]
    assert hidden_leftovers(tmp_path / "m") == []
    assert write(repo) > 1


def test_keep_versions_must_be_positive(tmp_path):
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError):
            ModelRepository(tmp_path, keep_versions=bad)


# -- 2. promoted() and its fallbacks ------------------------------------------------------------------------


def test_promoted_falls_back_to_newest_valid_version(tmp_path):
    repo = ModelRepository(tmp_path)
    assert repo.promoted("m") is None
    assert repo.pointer("m") is None
    for _ in range(3):
        write(repo)
    assert repo.promoted("m") == 3  # no pointer yet
    pointer_file = tmp_path / "m" / POINTER_FILE
    for garbage in (
        b"\x00\xff\xfe not json",
        b"",
        b"[1, 2]",
        b'{"version": "x"}',
        b'{"version": 99}',
        b'{"version": true}',
        b'{"version": 0}',
        b'{"previous": 1}',
        b"null",
        b"2",
    ):
        pointer_file.write_bytes(garbage)
        assert repo.promoted("m") == 3, garbage
        assert repo.pointer("m") is None, garbage

    repo.promote("m", 1)
    assert repo.promoted("m") == 1
    # The promoted version's meta gets damaged: it is no longer a version, the newest valid one serves.
    (tmp_path / "m" / "1" / META_FILE).write_text("{truncated")
    assert repo.versions("m") == [2, 3]
    assert repo.promoted("m") == 3
    assert repo.pointer("m") is None
    # A numbered folder without meta is not a version, but its number is never reused.
    (tmp_path / "m" / "7").mkdir()
    (tmp_path / "m" / "8").write_text("a file, not a folder")
    assert repo.versions("m") == [2, 3]
    assert repo.promoted("m") == 3
    assert write(repo) == 9

    with pytest.raises(NotFound) as info:
        repo.promote("m", 42)
    assert info.value.status == 404
    with pytest.raises(NotFound):
        repo.promote("m", 7)
    with pytest.raises(NotFound):
        repo.promote("m", "2")
    assert repo.promoted("m") == 9


def test_promoted_is_none_without_versions(tmp_path):
    repo = ModelRepository(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / POINTER_FILE).write_text('{"version": 1}')
    assert repo.promoted("m") is None
    assert repo.versions("m") == []
    with pytest.raises(NotFound):
        repo.promote("m", 1)


# -- 3. previous and rollback -------------------------------------------------------------------------------


def test_promote_records_previous_and_rolls_back(tmp_path):
    repo = ModelRepository(tmp_path)
    for _ in range(3):
        write(repo)
    first = repo.promote("m", 1)
    assert first["version"] == 1 and first["previous"] == 3  # 3 was serving (newest, no pointer yet)
    assert first["promoted_at"].endswith("+00:00")
    assert repo.promote("m", 2)["previous"] == 1
    assert repo.promote("m", 2)["previous"] == 1  # promoting again keeps the rollback target
    assert repo.promote("m", 3)["previous"] == 2
    stored = json.loads((tmp_path / "m" / POINTER_FILE).read_text())
    assert stored == repo.pointer("m")
    assert stored["version"] == 3 and stored["previous"] == 2

    rollback = repo.promote("m", stored["previous"])
    assert rollback["version"] == 2 and rollback["previous"] == 3
    assert repo.promoted("m") == 2

    described = repo.describe("m")
    assert described["model"] == "m"
    assert described["promoted"] == 2 and described["previous"] == 3
    assert [v["version"] for v in described["versions"]] == [3, 2, 1]
    assert [v["promoted"] for v in described["versions"]] == [False, True, False]
    assert all("sha256" in v and v["model"] == "m" for v in described["versions"])
    assert repo.describe("nothing") == {"model": "nothing", "promoted": None, "previous": None, "versions": []}


def test_first_promotion_has_no_previous(tmp_path):
    repo = ModelRepository(tmp_path)
    write(repo)
    assert repo.promote("m", 1)["previous"] is None
    write(repo)
    assert repo.promote("m", 2)["previous"] == 1


# -- 4. pruning ---------------------------------------------------------------------------------------------


def test_prune_keeps_newest_promoted_previous_and_the_one_below(tmp_path):
    repo = ModelRepository(tmp_path, keep_versions=2)
    for _ in range(6):
        write(repo)
    repo.promote("m", 3)
    repo.promote("m", 2)  # promoted 2, previous 3, highest below promoted 1, newest 5 and 6
    assert repo.prune("m") == [4]
    assert repo.versions("m") == [1, 2, 3, 5, 6]
    assert not (tmp_path / "m" / "4").exists()
    assert repo.prune("m") == []

    assert write(repo) == 7 and write(repo) == 8
    assert repo.prune("m") == [5, 6]
    assert repo.versions("m") == [1, 2, 3, 7, 8]
    assert repo.promoted("m") == 2
    assert hidden_leftovers(tmp_path / "m") == []

    # Numbers never repeat, even when the highest versions are gone entirely.
    shutil.rmtree(tmp_path / "m" / "7")
    shutil.rmtree(tmp_path / "m" / "8")
    assert write(repo) == 9
    # Without the counter file, the remaining folders and the pointer still keep the numbers growing.
    (tmp_path / "m" / ".last_version").unlink()
    assert write(repo) == 10

    # Moving on: the old rollback chain becomes prunable.
    repo.promote("m", 10)  # previous 2, below 9
    assert repo.prune("m") == [1, 3]
    assert repo.versions("m") == [2, 9, 10]


def test_numbers_never_repeat_after_pruning(tmp_path):
    repo = ModelRepository(tmp_path, keep_versions=1)
    seen = []
    for _ in range(5):
        seen.append(write(repo))
        repo.promote("m", seen[-1])
        repo.prune("m")
    assert seen == [1, 2, 3, 4, 5]
    assert repo.versions("m") == [4, 5]
    # A fresh repository object over the same folder continues the series.
    assert write(ModelRepository(tmp_path)) == 6


# -- 5. leftovers of killed writers -------------------------------------------------------------------------


def test_staging_leftovers_are_invisible_and_pruned(tmp_path):
    repo = ModelRepository(tmp_path)
    write(repo)
    series = tmp_path / "m"
    staging = series / ".staging-deadbeef"
    staging.mkdir()
    (staging / WEIGHTS).write_bytes(b"half written")
    (staging / META_FILE).write_text('{"version": 2}')
    (series / ".trash-5-abc").mkdir()
    (series / ".trash-5-abc" / WEIGHTS).write_bytes(b"x")
    (series / ".tmp-promoted.json-1234").write_text("{")
    assert repo.versions("m") == [1]
    assert repo.promoted("m") == 1
    assert repo.models() == ["m"]
    assert write(repo) == 6  # a version being deleted (the trashed 5) still counts as a used number
    assert repo.prune("m") == []
    assert hidden_leftovers(series) == []
    assert repo.versions("m") == [1, 6]


# -- 6. readers never write ---------------------------------------------------------------------------------


def call_every_reader(repo: ModelRepository, model: str) -> None:
    repo.models()
    repo.versions(model)
    repo.pointer(model)
    repo.promoted(model)
    repo.describe(model)
    repo.folder(model, 1)
    try:
        repo.meta(model, 1)
    except NotFound:
        pass


def forbid_writes(monkeypatch) -> None:
    """Make every way of writing to the filesystem fail, so a reader that tries is caught."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a reader tried to write: {args}")

    for name in ("mkdir", "makedirs", "rename", "replace", "unlink", "remove", "rmdir", "symlink", "link"):
        monkeypatch.setattr(os, name, refuse)
    real_os_open, real_io_open = os.open, io.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if flags & write_flags:
            refuse(path, flags)
        return real_os_open(path, flags, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            refuse(file, mode)
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr("builtins.open", io_open)


def test_readers_never_write(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    repo = ModelRepository(root)
    for _ in range(3):
        write(repo)
    repo.promote("m", 2)
    (root / "broken").mkdir()
    (root / "broken" / "1").mkdir()
    (root / "broken" / POINTER_FILE).write_text("garbage")
    for path in sorted(root.rglob("*"), reverse=True) + [root]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # ineffective as root, hence the checks below
    try:
        before = snapshot(root)
        with monkeypatch.context() as patch:
            forbid_writes(patch)
            for model in ("m", "broken", "absent"):
                call_every_reader(repo, model)
            assert repo.promoted("m") == 2
            assert repo.promoted("broken") is None
            assert repo.describe("m")["promoted"] == 2
            assert repo.models() == ["broken", "m"]
        assert snapshot(root) == before
        assert not (root / "absent").exists()
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_readers_on_a_missing_root_create_nothing(tmp_path, monkeypatch):
    root = tmp_path / "nowhere" / "repo"
    repo = ModelRepository(root)
    with monkeypatch.context() as patch:
        forbid_writes(patch)
        call_every_reader(repo, "m")
        assert repo.models() == [] and repo.versions("m") == [] and repo.promoted("m") is None
        assert repo.pointer("m") is None
        assert repo.describe("m")["versions"] == []
        with pytest.raises(NotFound):
            repo.meta("m", 1)
    assert list(tmp_path.iterdir()) == []


def test_writers_create_the_model_folder(tmp_path):
    repo = ModelRepository(tmp_path / "new" / "repo")
    assert repo.prune("m") == []
    assert (tmp_path / "new" / "repo" / "m").is_dir()
    with pytest.raises(NotFound):
        repo.promote("x", 1)
    assert write(repo, "y") == 1
    assert repo.models() == ["m", "x", "y"]


# -- 7. concurrent readers while a writer moves on ----------------------------------------------------------


def test_concurrent_readers_always_see_complete_promoted_versions(tmp_path):
    repo = ModelRepository(tmp_path, keep_versions=2)
    total = 30
    done = threading.Event()
    failures: list[str] = []
    reads = [0] * 4
    seen: set[int] = set()

    def writer() -> None:
        try:
            for _ in range(total):
                version = write(repo, data=os.urandom(random.randint(64 << 10, 512 << 10)))
                repo.promote("m", version)
                repo.prune("m")
                time.sleep(0.05)  # lets a version live for >= 2 cycles (100 ms) after it stops being promoted
        except Exception as exc:  # noqa: BLE001 - reported as a failure below
            failures.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(index: int) -> None:
        while not done.is_set():
            version = repo.promoted("m")
            if version is None:
                continue
            try:
                meta = repo.meta("m", version)
                data = (repo.folder("m", version) / WEIGHTS).read_bytes()
            except (OSError, NotFound) as exc:
                failures.append(f"reader {index}: version {version}: {exc!r}")
                continue
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                failures.append(f"reader {index}: version {version} has incomplete weights")
            reads[index] += 1
            seen.add(version)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert all(count > 0 for count in reads), reads
    assert len(seen) > 5
    assert repo.promoted("m") == total
    assert len(repo.versions("m")) <= 4
    assert hidden_leftovers(tmp_path / "m") == []


# -- 8. crash safety: SIGKILL a writer process at random moments --------------------------------------------

CRASH_WRITER = textwrap.dedent(
    """
    import hashlib, os, random, sys
    from servekit.repository import ModelRepository

    repo = ModelRepository(sys.argv[1], keep_versions=3)
    print("ready", flush=True)
    while True:
        data = os.urandom(random.randint(1 << 20, 3 << 20))
        meta = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

        def write_weights(folder, data=data):
            half = len(data) // 2
            with open(folder / "weights.bin", "wb") as out:
                out.write(data[:half])
                out.flush()
                out.write(data[half:])

        version = repo.write_version("m", write_weights, meta)
        repo.promote("m", version)
        repo.prune("m")
    """
)


def check_after_crash(repo: ModelRepository, series: Path) -> tuple[int, bool]:
    """Everything a reader can see is complete; returns the newest version and whether a staging was left."""
    versions = repo.versions("m")
    if series.is_dir():
        numbered = sorted(int(p.name) for p in series.iterdir() if p.name.isdigit())
        assert numbered == versions, "a numbered folder without a valid meta.json"
    for version in versions:
        meta = repo.meta("m", version)
        assert meta["version"] == version
        data = (repo.folder("m", version) / WEIGHTS).read_bytes()
        assert len(data) == meta["size"] and hashlib.sha256(data).hexdigest() == meta["sha256"], version
    pointer_file = series / POINTER_FILE
    if pointer_file.exists():
        stored = json.loads(pointer_file.read_bytes())  # replaced atomically: always parses
        assert stored["version"] in versions, "the pointer names an unreadable version"
        assert repo.pointer("m") == stored
        assert stored["previous"] is None or stored["previous"] in versions
    promoted = repo.promoted("m")
    if versions:
        assert promoted in versions
    else:
        assert promoted is None
    staging = series.is_dir() and any(p.name.startswith(".staging-") for p in series.iterdir())
    return (versions[-1] if versions else 0), staging


def test_sigkilled_writer_never_leaves_a_broken_repository(tmp_path):
    kills_wanted = int(os.environ.get("REPO_CRASH_KILLS", "100"))
    budget_s = max(40.0, kills_wanted * 0.4)
    script = tmp_path / "writer.py"
    script.write_text(CRASH_WRITER)
    root = tmp_path / "repo"
    series = root / "m"
    repo = ModelRepository(root, keep_versions=3)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    rng = random.Random()
    kills = staging_left = 0
    newest = 0
    started = time.monotonic()
    while kills < kills_wanted and time.monotonic() - started < budget_s:
        child = subprocess.Popen(
            [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        try:
            line = child.stdout.readline()
            assert line == b"ready\n", (line, child.stderr.read() if child.poll() is not None else b"")
            time.sleep(rng.uniform(0, 0.3))
            assert child.poll() is None, child.stderr.read().decode()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
        kills += 1
        latest, staging = check_after_crash(repo, series)
        staging_left += staging
        assert latest >= newest or latest == 0 and newest == 0, "version numbers went backwards"
        if newest:
            assert latest, "every version vanished"
        newest = max(newest, latest)
    elapsed = time.monotonic() - started
    print(f"\n{kills} kills in {elapsed:.1f} s; newest version {newest}; {staging_left} kills left a staging folder")
    assert kills >= kills_wanted, f"only {kills} kills in {budget_s:.0f} s"
    assert newest > 0, "the writer never finished a version"
    assert staging_left > 0, "no kill landed inside a write: the test did not exercise anything"

    repo.prune("m")
    assert hidden_leftovers(series) == []
    latest, staging = check_after_crash(repo, series)
    assert not staging and latest == newest
    assert len(repo.versions("m")) <= 6


def test_a_version_written_not_to_be_promoted_is_not_served_by_the_fallback(tmp_path):
    repo = ModelRepository(tmp_path)
    held = repo.write_version("m", lambda folder: (folder / "w").write_bytes(b"1"), {"promote": "never"})
    assert repo.pointer("m") is None and repo.promoted("m") is None
    served = repo.write_version("m", lambda folder: (folder / "w").write_bytes(b"2"), {"promote": "always"})
    repo.write_version("m", lambda folder: (folder / "w").write_bytes(b"3"), {"promote": "never"})
    assert repo.promoted("m") == served
    repo.promote("m", held)  # promoting it by hand still works
    assert repo.promoted("m") == held
