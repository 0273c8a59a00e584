"""sensecf.atomic (writes a kill cannot tear, locks) and sensecf.cli (the one error boundary)."""

from __future__ import annotations

import os
import pickle

import pytest
import typer

from sensecf.atomic import LockedError, atomic_path, run_lock, write_json, write_text
from sensecf.cli import InputError, run_cli


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_stale_temp_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    (tmp_path / ".a.json.x1y2.tmp").write_text("torn")
    write_json(tmp_path / "a.json", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == '{\n  "k": 1\n}'


def test_artifacts_get_the_usual_permissions_not_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    # the module read the umask at import; under the usual 022 an artifact is rw-r--r--
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~old)


def test_the_run_lock_is_exclusive_and_released(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(LockedError, match=r"\.lock: another writer holds this lock \(pid"):
            run_lock(tmp_path).__enter__()
    with run_lock(tmp_path) as again:  # released: the next writer takes it and names itself
        assert again.info_file.read_text().startswith(f"pid {os.getpid()}:")
    assert not again.info_file.exists()


def test_input_error_reads_file_where_reason_and_crosses_processes():
    e = InputError("a.csv", "row 3, column 'age'", "not a number: 'x'")
    assert str(e) == "a.csv: row 3, column 'age': not a number: 'x'"
    back = pickle.loads(pickle.dumps(e))
    assert (back.file, back.where, back.reason, str(back)) == (e.file, e.where, e.reason, str(e))


def _cli(mode: str = typer.Option("ok")) -> None:
    if mode == "bad":
        raise InputError("a.csv", "row 3", "broken")
    if mode == "bug":
        raise RuntimeError("boom")
    if mode == "exit":
        raise typer.Exit(3)
    print("fine")


@pytest.mark.parametrize(
    ("argv", "code", "out", "err"),
    [
        ([], 0, "fine", None),
        (["--mode", "bad"], 2, "", "error: a.csv: row 3: broken"),
        (["--mode", "bug"], 1, "", "internal error: RuntimeError: boom (re-run with --debug for the traceback)"),
        (["--mode", "exit"], 3, "", None),
    ],
)
def test_run_cli_ends_in_one_line_and_an_exit_code(argv, code, out, err, capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(_cli, argv)
    assert ended.value.code == code
    captured = capsys.readouterr()
    assert captured.out.strip() == out
    assert "Traceback" not in captured.err
    if err is not None:
        assert captured.err.strip().splitlines() == [err]


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(SystemExit):
        run_cli(_cli, ["--mode", "bug", "--debug"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("(re-run with --debug for the traceback)")
