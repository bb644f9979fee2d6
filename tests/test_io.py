import os

import pytest

from lmscaling.io import atomic_path, read_json, sha256_file, write_json


def test_atomic_path_renames_on_success(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("hello")
        assert not dest.exists()  # nothing visible under the final name until the block ends
    assert dest.read_text() == "hello"
    assert oct(dest.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [p.name for p in dest.parent.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    write_json(dest, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed")
    assert read_json(dest) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_refuses_nan_and_sha256(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "b").write_bytes(b"abc")
    assert sha256_file(tmp_path / "b") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_full_disk_error_names_the_output_and_guard_reports_one_line(tmp_path, capsys):
    import errno

    from lmscaling.jobs import guard

    out = tmp_path / "shard.parquet"
    with pytest.raises(SystemExit) as stop:
        with guard("prepare_reduce"), atomic_path(out) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert stop.value.code == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("ERROR [prepare_reduce]: no space left on the device writing ")
    assert str(out) in line and "rerun" in line
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_guard_lets_other_os_errors_through():
    import errno

    from lmscaling.jobs import guard

    with pytest.raises(OSError, match="bad descriptor"):
        with guard("x"):
            raise OSError(errno.EBADF, "bad descriptor")
