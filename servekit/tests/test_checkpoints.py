import json

import pytest

from servekit.checkpoints import CheckpointStore


def write(text):
    def writer(folder):
        (folder / "weights.bin").write_text(text)

    return writer


def test_save_and_read_current(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.current("m") is None
    folder = store.save("m", write("v1"), {"acc": 0.5})
    found_folder, meta = store.current("m")
    assert found_folder == folder and meta == {"acc": 0.5}
    assert (found_folder / "weights.bin").read_text() == "v1"
    assert json.loads((folder / "meta.json").read_text()) == {"acc": 0.5}


def test_new_version_replaces_old_and_prunes(tmp_path):
    store = CheckpointStore(tmp_path)
    first = store.save("m", write("v1"), {"n": 1})
    second = store.save("m", write("v2"), {"n": 2})
    folder, meta = store.current("m")
    assert folder == second and meta == {"n": 2}
    assert not first.exists()


def test_failed_write_keeps_last_good_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    good = store.save("m", write("good"), {"n": 1})

    def crash(folder):
        (folder / "weights.bin").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.save("m", crash, {"n": 2})
    folder, meta = store.current("m")
    assert folder == good and meta == {"n": 1}
    assert (folder / "weights.bin").read_text() == "good"
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")] == []


def test_unreadable_pointer_means_no_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save("m", write("v1"), {})
    (tmp_path / "m" / "CURRENT").write_text("does-not-exist")
    assert store.current("m") is None
