"""Which `datasets` entries are sampled from, and with which field mapping."""

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.sft_datasets import load_rows, split_sources


def test_sft_entries_are_sampled_and_preference_entries_pass_through():
    entries = [
        {"path": "a.jsonl", "type": "alpaca"},
        {"path": "p.jsonl", "type": "chatml.intel"},
        {"path": "c.jsonl", "type": "chat_template", "field_messages": "conversations",
         "message_property_mappings": {"role": "from", "content": "value"},
         "roles": {"user": ["human"], "assistant": ["bot"]}, "roles_to_train": ["assistant"]},
        {"path": "d.jsonl", "type": "chat_template", "field_messages": "conversation",
         "field_chosen": "chosen", "field_rejected": "rejected"},
        {"path": "s.jsonl", "type": "chat_template:chatml", "message_field_role": "from"},
        {"path": "q.jsonl", "type": "prompt_completion", "field_prompt": "question",
         "field_completion": "answer"},
        {"path": "u.jsonl", "type": {"field_instruction": "q", "field_output": "a",
                                     "format": "{instruction}"}},
        {"path": "x.jsonl", "type": "passthrough"},
        {"path": "y.jsonl"},
    ]
    sft, preference = split_sources(entries)
    assert preference == [1, 3, 7, 8]
    found = {source.index: (source.fmt, source.field_map) for source in sft}
    assert found == {
        0: ("alpaca", {}),
        2: ("chat_template", {"field_messages": "conversations",
                              "message_property_mappings": {"role": "from", "content": "value"},
                              "roles": {"user": ["human"], "assistant": ["bot"]}}),
        4: ("chat_template", {"message_field_role": "from"}),
        5: ("prompt_completion", {"field_prompt": "question", "field_completion": "answer"}),
        6: ("custom", {"field_instruction": "q", "field_output": "a", "format": "{instruction}"}),
    }
    assert sft[0].name == "datasets[0] a.jsonl"


@pytest.mark.parametrize(("ds_type", "shape"), [("completion", "raw text in one column"),
                                                ("input_output", "text segments with label")])
def test_axolotl_types_without_a_gold_answer_are_refused_in_one_line(ds_type, shape):
    entries = [{"path": "a.jsonl", "type": "alpaca"}, {"path": "t.jsonl", "type": ds_type}]
    with pytest.raises(UserError) as err:
        split_sources(entries)
    message = str(err.value)
    assert message.startswith(f"datasets[1] t.jsonl: `type: {ds_type}` is {shape}")
    assert "use `type: prompt_completion`" in message and "\n" not in message


def load_error(path, capfd) -> tuple[str, str]:
    """(the UserError's message, what was printed meanwhile) for loading ``path`` as alpaca."""
    (source,), _ = split_sources([{"path": str(path), "type": "alpaca"}])
    with pytest.raises(UserError) as err:
        load_rows(source)
    return str(err.value), capfd.readouterr().err


@pytest.mark.parametrize("line", ["42", "[1, 2]", '"text"'])  # `null`: a row of nulls
def test_a_json_line_that_is_not_an_object_is_one_line_through_axolotls_loader(
    tmp_path, capfd, line
):
    data = tmp_path / "rows.jsonl"
    data.write_text(f'{{"instruction": "a", "output": "b"}}\n{line}\n', encoding="utf-8")
    message, _ = load_error(data, capfd)
    assert message.startswith(f"datasets[0] {data}: line 2 is a JSON ") and "\n" not in message


def test_a_bom_and_a_bad_line_name_the_bad_line_and_print_nothing_else(tmp_path, capfd):
    data = tmp_path / "rows.jsonl"
    good = '{"instruction": "a", "output": "b"}\n'
    data.write_bytes(b"\xef\xbb\xbf" + (good * 7 + '{"instruction": "c", "output"\n').encode())
    message, printed = load_error(data, capfd)
    assert message.startswith(f"datasets[0] {data}: line 8 is not valid JSON"), message
    assert "Failed to load JSON" not in printed  # datasets' own log lines are silenced


def test_a_directory_without_data_files_is_one_line_with_the_fix(tmp_path, capfd):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.md").write_text("not data")
    message, _ = load_error(folder, capfd)
    assert message.startswith(f"datasets[0] {folder}: a directory with no data files ")
    assert "set `path` to a data file" in message and "\n" not in message


def test_an_sft_test_dataset_is_refused_in_one_line_by_the_plugin(tmp_path):
    """Axolotl's preference loader would read an SFT `test_datasets` entry as it is (no pairs,
    no error): the plugin says what to do instead, before sampling anything."""
    from axolotl.utils.dict import DictDefault

    from axolotl_ipo.errors import PREFIX
    from axolotl_ipo.plugin import IPOPlugin

    cfg = DictDefault({
        "rl": "ipo", "datasets": [{"path": str(tmp_path / "train.jsonl"), "type": "alpaca"}],
        "test_datasets": [{"path": "prefs.jsonl", "type": "chatml.intel"},
                          {"path": "eval.jsonl", "type": "alpaca", "split": "train"}],
    })
    with pytest.raises(SystemExit) as err:
        IPOPlugin().load_datasets(cfg)
    message = str(err.value)
    assert message.startswith(PREFIX + "test_datasets[1] eval.jsonl: `type: alpaca` is an SFT ")
    assert "val_set_size" in message and "\n" not in message
