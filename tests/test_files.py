"""One atomic writer for every file the project writes (checkpoints, weights, pictures)."""
import os

import pytest

from microtensor.files import write_atomically, write_bytes_atomically


def test_text_and_bytes_arrive_whole_and_readable_by_others(tmp_path):
    path = tmp_path / "page.html"
    write_bytes_atomically(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    write_bytes_atomically(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask     # as open() would make it
    assert os.listdir(tmp_path) == ["page.html"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, write, where="save")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_bad_targets_name_the_caller_and_the_fix(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"render: '.*' is a folder\. Give a file"):
        write_bytes_atomically(tmp_path, "x", where="render")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"save: cannot create the folder .* a part "
                                                 r"of it is a file\. Choose a path"):
        write_bytes_atomically(tmp_path / "file" / "a.txt", "x", where="save")


def test_missing_folders_are_created(tmp_path):
    write_bytes_atomically(tmp_path / "missing" / "deeper" / "a.txt", "x", where="save")
    assert (tmp_path / "missing" / "deeper" / "a.txt").read_text() == "x"


def test_viz_writes_through_the_same_helper(tmp_path):
    from viz.engine import write_atomic
    write_atomic(tmp_path / "g.svg", "<svg/>")
    assert (tmp_path / "g.svg").read_text() == "<svg/>"
