"""_fsutil: atomic file and folder writes, fashionnet's own temp names, the user cache folder."""

import errno
import os
import stat

import pytest

from fashionnet._fsutil import (
    NotARegularFile,
    atomic_folder,
    atomic_write,
    stale_temp_files,
    user_cache,
)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write(b"new but incomplete")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_write_that_fills_the_disk_names_the_file(tmp_path, monkeypatch):
    """write() and fsync() fail naming no file, and the temp file's name means nothing to
    the user: the error names the file being written, so its one line says where."""
    path = tmp_path / "f.bin"
    with pytest.raises(OSError) as caught, atomic_write(path) as f:
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught, atomic_write(path) as f:
        f.write(b"all of it")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    elsewhere = tmp_path / "input.bin"  # an error about another file keeps its name
    with pytest.raises(FileNotFoundError) as caught, atomic_write(path) as f:
        elsewhere.read_bytes()
    assert caught.value.filename == str(elsewhere)

    out = tmp_path / "converted"  # a file in an atomic folder is named inside the folder
    with pytest.raises(OSError) as caught, atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("a")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "b.txt"))
    assert caught.value.filename == str(out / "b.txt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "folder"])
def test_atomic_write_leaves_what_is_not_a_regular_file_in_place(kind, tmp_path):
    path = tmp_path / "out.bin"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:  # the rename would replace the link; given /dev/zero itself, the device
        path.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFile, match="not a regular file"), atomic_write(path) as f:
        f.write(b"never written")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    if kind == "fifo":
        assert stat.S_ISFIFO(path.lstat().st_mode)
    elif kind == "folder":
        assert path.is_dir()
    else:
        assert path.is_symlink() and os.readlink(path) == "/dev/zero"


def test_an_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "converted"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()
    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), atomic_folder(failed) as tmp:
        (tmp / "a.txt").write_text("a")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]


def test_only_fashionnets_own_temp_files_count_as_stale(tmp_path):
    (tmp_path / ".notes.tmp").write_text("a user's file")
    (tmp_path / ".last.npz.tmp").write_text("not ours either")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "last.npz") as f:
        f.write(b"x")
        leftover = sorted(tmp_path.glob(".last.npz.fashionnet-*.tmp"))
        raise RuntimeError("killed here")  # (a real kill leaves the file; the test keeps it)
    assert stale_temp_files(tmp_path) == []  # removed on error
    leftover[0].write_bytes(b"left by a kill")
    assert stale_temp_files(tmp_path) == leftover


def test_the_user_cache_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache("csv") == tmp_path / "fashionnet" / "csv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache() == tmp_path / "home" / ".cache" / "fashionnet"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
