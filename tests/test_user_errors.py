"""A user's mistake through the real CLIs (`axolotl-ipo sample`, `python -m axolotl.cli.train`):
exit code 1, one line naming the file, row or key, no traceback, finished batches kept."""

import json
import sys
from pathlib import Path

import pytest

from axolotl_ipo.errors import PREFIX
from axolotl_ipo.preflight import check_model_paths, dataset_problem, looks_local

from helpers import axolotl, axolotl_ipo, run, sft_config, write_config

BAD_FILES = {
    "malformed.jsonl": '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output"\n',
    "empty.jsonl": "",
    "all_bad.jsonl": '{"instruction": "a"}\n{"question": "b"}\n',
}


def sample_cli(config: Path, output: Path) -> list[str]:
    return axolotl_ipo("sample", str(config), "--output", str(output))


def the_error(code: int, log: str) -> str:
    """The one error line; fails the test on a traceback, a zero exit or a second error line."""
    assert code == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, log[-3000:]
    return lines[0]


def config_with(tiny_model_dir: Path, work: Path, data: str | None = None, **keys) -> Path:
    cfg = sft_config(tiny_model_dir, work, **keys)
    if data is not None:
        path = work / data
        path.write_text(BAD_FILES.get(data, ""), encoding="utf-8")
        cfg["datasets"][0]["path"] = str(path) if data in BAD_FILES else f"/nope/{data}"
    return write_config(work, cfg)


@pytest.mark.parametrize(
    ("keys", "data", "expected"),
    [
        ({"base_model": "/nope/model"}, None, "base_model: /nope/model does not exist"),
        ({}, "missing.jsonl", "/nope/missing.jsonl: no such file or directory"),
        ({}, "malformed.jsonl", "malformed.jsonl: line 2 is not valid JSON"),
        ({}, "empty.jsonl", "empty.jsonl: the file is empty"),
        ({}, "all_bad.jsonl", "row 0, field 'output': missing"),
        ({"ipo_tau": -1}, None, "ipo_tau must be > 0"),
        ({"datasets": [{"path": "x.jsonl", "type": "sharegpt"}]}, None,
         "config.yml: datasets: `type: sharegpt.*` is deprecated"),
    ],
    ids=["base_model", "missing_file", "malformed_line", "empty_file",
         "only_bad_rows", "config_key", "axolotl_validation"],
)
def test_sample_names_the_mistake_in_one_line(tiny_model_dir, tmp_path, keys, data, expected):
    cfg = config_with(tiny_model_dir, tmp_path, data, **keys)
    line = the_error(*run(sample_cli(cfg, tmp_path / "pairs"), tmp_path))
    assert expected in line


def test_broken_yaml_is_one_line_with_its_position(tmp_path):
    cfg = tmp_path / "config.yml"
    cfg.write_text("base_model: [unclosed\nrl: ipo\n", encoding="utf-8")
    line = the_error(*run(sample_cli(cfg, tmp_path / "pairs"), tmp_path))
    assert f"{cfg}: not valid YAML at line 2, column 3" in line


@pytest.mark.parametrize(
    ("keys", "data", "expected"),
    [
        ({"base_model": "/nope/model"}, None, "base_model: /nope/model does not exist"),
        ({}, "malformed.jsonl", "malformed.jsonl: line 2 is not valid JSON"),
    ],
    ids=["register_hook", "load_datasets_hook"],
)
def test_training_through_axolotls_cli_says_it_in_one_line(
    tiny_model_dir, tmp_path, keys, data, expected
):
    cfg = config_with(tiny_model_dir, tmp_path, data, **keys)
    line = the_error(*run(axolotl("train", cfg), tmp_path))
    assert expected in line


# Fails the second batch commit with ENOSPC, then runs the real CLI.
FULL_DISK = """
import errno, sys
import axolotl_ipo.pairs.store as store
real = store._atomic_write
def full(path, payload):
    if path.name == "batch-000001.jsonl":
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(path, payload)
store._atomic_write = full
from axolotl_ipo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_is_one_line_and_finished_batches_are_kept(tiny_model_dir, tmp_path):
    cfg = config_with(tiny_model_dir, tmp_path)
    out = tmp_path / "pairs"
    argv = sample_cli(cfg, out)
    code, log = run([sys.executable, "-c", FULL_DISK, *argv[1:]], tmp_path)
    line = the_error(code, log)
    assert "batch-000001.jsonl: No space left on device" in line and "resumes" in line
    (shard,) = out.glob("*/shards/batch-000000.jsonl")
    kept = shard.read_bytes()
    code, log = run(argv, tmp_path)
    assert code == 0, log[-3000:]
    assert "batches (sampled now / all)     2 / 3" in log
    assert shard.read_bytes() == kept
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 8


def test_unwritable_output_directory(tiny_model_dir, tmp_path):
    cfg = config_with(tiny_model_dir, tmp_path)
    (tmp_path / "a_file").write_text("")
    line = the_error(*run(sample_cli(cfg, tmp_path / "a_file" / "pairs"), tmp_path))
    assert f"cannot write {tmp_path / 'a_file' / 'pairs'}" in line and "Not a directory" in line


# -- the checks themselves, fast -------------------------------------------------------------


def test_local_paths_are_told_from_hub_ids():
    assert looks_local("/models/x") and looks_local("./x") and looks_local("a/b/c")
    assert not looks_local("HuggingFaceTB/SmolLM2-135M-Instruct") and not looks_local("gpt2")
    check_model_paths({"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"})  # hub: not ours
    with pytest.raises(ValueError, match="rejection_sampling.model: ./gone does not exist"):
        check_model_paths({"base_model": "gpt2", "rejection_sampling": {"model": "./gone"}})


def test_dataset_problems(tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert dataset_problem("d", str(rows)) is None  # one JSON document is fine
    lines = tmp_path / "lines.json"
    lines.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    assert dataset_problem("d", str(lines)).startswith("d: line 4 is not valid JSON")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    assert "the file is empty" in dataset_problem("d", str(blank))
    assert dataset_problem("d", "org/hub_dataset") is None


def test_dataset_lines_are_json_lines_split_on_newlines_only(tmp_path):
    """A raw U+2028 inside a string and a byte order mark do not move the bad line."""
    data = tmp_path / "d.jsonl"
    rows = '{"a": "x\u2028y\u0085z"}\n{"a": 1}\n\n{"a": \n'
    data.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    assert dataset_problem("d", str(data)).startswith("d: line 4 is not valid JSON")
    data.write_bytes(b"\xef\xbb\xbf" + rows.rsplit("\n", 2)[0].encode("utf-8") + b"\n")
    assert dataset_problem("d", str(data)) is None  # BOM, separators: a fine file


@pytest.mark.parametrize(("line", "kind"), [("42", "number"), ("[1, 2]", "array"),
                                            ('"text"', "string"), ("null", "null"),
                                            ("true", "boolean")])
def test_a_json_line_that_is_not_an_object_is_named(tmp_path, line, kind):
    data = tmp_path / "d.jsonl"
    data.write_text(f'{{"a": 1}}\n{line}\n{{"a": 2}}\n', encoding="utf-8")
    assert dataset_problem("d", str(data)) == (
        f"d: line 2 is a JSON {kind}, not an object with the row's columns; "
        "fix or remove that line."
    )
    array = tmp_path / "d.json"
    array.write_text(f'[{{"a": 1}}, {line}]', encoding="utf-8")
    assert dataset_problem("d", str(array)) == (
        f"d: item 2 of the JSON array is a JSON {kind}, not an object with the row's columns; "
        "fix or remove that item."
    )


def test_an_unclosed_quote_says_where_the_string_opened(tmp_path):
    from axolotl_ipo.cli import _read_yaml
    from axolotl_ipo.errors import UserError

    cfg = tmp_path / "config.yml"
    cfg.write_text('rl: ipo\nbase_model: "unclosed\ndatasets: []\nseed: 1\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        _read_yaml(cfg)
    message = str(err.value)
    assert "while scanning a quoted scalar at line 2, column 13" in message, message
    assert "\n" not in message
