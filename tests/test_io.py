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


def test_guard_reports_an_error_once_on_stderr_and_once_in_the_log(tmp_path, capsys, job_logging):
    from lmscaling.jobs import guard

    job_logging(log_file=tmp_path / "job.log")
    with pytest.raises(SystemExit) as stop:
        with guard("train_model"):
            raise KeyboardInterrupt
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["ERROR [train_model]: interrupted"]
    assert (
        (tmp_path / "job.log").read_text().endswith("ERROR lmscaling: [train_model] interrupted\n")
    )


def test_guard_lets_other_os_errors_through():
    import errno

    from lmscaling.jobs import guard

    with pytest.raises(OSError, match="bad descriptor"):
        with guard("x"):
            raise OSError(errno.EBADF, "bad descriptor")


@pytest.mark.parametrize("content", [b"", b'{"loss": 3.', b"\xff\xfe"])
def test_corrupt_json_is_one_line_job_error_naming_the_file(tmp_path, capsys, content):
    from lmscaling.io import CorruptFileError
    from lmscaling.jobs import guard

    path = tmp_path / "L1-D16.json"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match="L1-D16.json: not valid JSON"):
        read_json(path)
    with pytest.raises(SystemExit) as stop:
        with guard("collect_points"):
            read_json(path)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR [collect_points]: ") and str(path) in err
    assert "\n" not in err and "remove it and rerun" in err


def test_training_input_errors_are_one_line_job_errors(tmp_path, capsys):
    import numpy as np
    import torch

    from lmscaling.jobs import guard
    from lmscaling.model import GPTConfig
    from lmscaling.train import TrainConfig, TrainError, select_device, train

    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="'cuda' requested but CUDA is not available"):
            select_device("cuda")
    short = np.arange(10, dtype=np.uint16)  # fewer than context_length + 1 tokens
    with pytest.raises(SystemExit):
        with guard("train_model"):
            train(GPTConfig(64, 32, 1, 16, 1), TrainConfig(tokens=1000, device="cpu"), short)
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("ERROR [train_model]: L1-D16: too few tokens to train") and "\n" not in err
    )


def test_unexpected_error_traceback_reaches_the_job_log(tmp_path, job_logging):
    from lmscaling.jobs import guard

    log = tmp_path / "job.log"
    job_logging(log_file=log)
    with pytest.raises(KeyError):
        with guard("evaluate"):
            {}["missing"]
    text = log.read_text()
    assert "[evaluate] unexpected error" in text and "Traceback" in text and "KeyError" in text
