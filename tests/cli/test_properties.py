"""Property tests (hypothesis): whatever a recipe, a command line or a dataset row holds, `hf-dpo train` either gets
past every check to the model load, or ends with exit code 2 and one `error:` line naming the file, row or key —
never a traceback. The model load itself is replaced by a marker, so each example takes milliseconds; restarts of
the label store at random points must lose nothing."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_dpo import cli

FAST = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Recipe keys the properties vary: every hf_dpo key and the TrainingArguments keys recipes use. Keys naming
# places (output_dir, caches, checkpoints, the Hub) are left out: random text there would write around the disk.
KEYS = [
    "model_name_or_path",
    "quantization",
    "bnb_4bit_quant_type",
    "bnb_4bit_quant_storage",
    "torch_dtype",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "dataset_train_split",
    "dataset_test_split",
    "eval_fraction",
    "prompt_column",
    "chosen_column",
    "rejected_column",
    "system_prompt",
    "apply_chat_template",
    "max_train_samples",
    "max_eval_samples",
    "on_bad_rows",
    "beta",
    "loss_type",
    "label_smoothing",
    "rpo_alpha",
    "max_length",
    "max_prompt_length",
    "precompute_ref_log_probs",
    "prefix_sharing",
    "logps_chunk_size",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "warmup_steps",
    "weight_decay",
    "seed",
    "logging_steps",
    "eval_strategy",
    "lr_scheduler_type",
    "num_samples_per_prompt",
    "sampling_temperature",
    "sampling_top_p",
    "max_new_tokens",
    "pairs_per_prompt",
    "eval_num_generations",
    "judge",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["4bit", "none", "sigmoid", "skip", "auto", "1e-4", "nf4", "hf_dpo.pairs.demo_task:judge"]
    ),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2)
)
recipe_keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10), st.booleans(), st.integers())


class Passed(Exception):
    """Raised where the model would load: every check passed."""


def _data_dir(root: Path) -> Path:
    data = root / "data"
    if not data.exists():
        data.mkdir(parents=True)
        rows = [
            {"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": f"maybe {i}"} for i in range(6)
        ]
        (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    return data


def run_train(argv: list[str]) -> tuple[str, str]:
    """('passed' | 'error' | 'help', stderr) of `hf-dpo train ARGV`, the model load replaced by Passed."""
    err = io.StringIO()

    def reached_model(*args, **kwargs):
        raise Passed

    with (
        mock.patch("hf_dpo.run.load_policy", reached_model),
        mock.patch("hf_dpo.run.build_trainer", reached_model),
        # Preflight loads the tokenizer: a drawn model name that looks like a Hub id fails at once, not after
        # ~45 s of retries against a network the tests never use.
        mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", True),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            rc = cli.main(["train", *argv])
        except Passed:
            return "passed", err.getvalue()
        except SystemExit as stop:  # a drawn value that is a help flag (-h, -hx, --he): the help, exit 0
            helps = [
                t for t in argv if t.startswith("-h") or (len(t) > 2 and "--help".startswith(t.split("=")[0]))
            ]
            assert stop.code == 0 and helps, (stop.code, argv)
            return "help", ""
    text = err.getvalue()
    assert rc == 2, (rc, text)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    return "error", errors[0]


def _recipe_file(root: Path, body: dict) -> Path:
    path = root / "r.yaml"
    base = {"dataset_name": str(_data_dir(root)), "output_dir": str(root / "run"), "report_to": "none"}
    path.write_text(yaml.safe_dump({**base, **body}, allow_unicode=True))
    return path


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def scratch(tmp_path_factory):
    """A scratch dir every example runs in, as its working directory too: a generated input can name a relative
    place (`--output-dir x`, a text value of a path key), and a run that passes its checks writes recipe.yaml
    there. Module-scoped: hypothesis runs many examples per test and refuses function-scoped fixtures."""
    directory = tmp_path_factory.mktemp("hf_dpo_props")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        yield directory


def test_a_relative_output_dir_lands_in_the_working_dir_not_the_repository(scratch):
    # How a property run once left a random-named dir with recipe.yaml in the repository: the command-line
    # property draws `--output-dir <text>`, relative to the working directory, and a run that passes every
    # check writes recipe.yaml there before the model loads.
    outcome, _ = run_train([str(_recipe_file(scratch, {})), "--output-dir", "relative_run"])
    assert outcome == "passed"
    assert (scratch / "relative_run" / "recipe.yaml").is_file()
    assert not (REPO / "relative_run").exists()


@FAST
@given(st.dictionaries(recipe_keys, values, max_size=4))
def test_any_recipe_trains_or_names_the_key(scratch, body):
    outcome, line = run_train([str(_recipe_file(scratch, body))])
    if outcome == "error":
        named = [str(k) for k in body] + ["r.yaml", "train.jsonl", "test.jsonl", "judge", "data"]
        assert any(k in line for k in named), line


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(KEYS + ["lora_rnak", "output-dir"]), st.text(max_size=10)), max_size=3)
)
def test_any_command_line_override_trains_or_names_the_key(scratch, pairs):
    recipe = _recipe_file(scratch, {})
    argv = [str(recipe)] + [tok for key, value in pairs for tok in (f"--{key}", value)]
    outcome, line = run_train(argv)
    if outcome == "error":
        named = [k for k, _ in pairs] + [k.replace("-", "_") for k, _ in pairs]
        named += ["command line", "r.yaml", "train.jsonl", "test.jsonl"]
        assert any(k in line for k in named), line


texts = st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "same"]))
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.one_of(
                st.sampled_from(["user", "assistant", "system", "wizard"]), st.integers(), st.none()
            )
        },
        optional={"content": st.one_of(texts, st.integers(), st.none())},
    ),
    max_size=3,
)
cells = st.one_of(
    texts, st.integers(), st.floats(), st.none(), st.booleans(), messages, st.lists(st.integers(), max_size=2)
)
rows = st.one_of(
    st.fixed_dictionaries({}, optional={"prompt": cells, "chosen": cells, "rejected": cells, "x": cells}),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=5),
)


@FAST
@given(st.lists(rows, min_size=0, max_size=4), st.sampled_from(["error", "skip"]), st.booleans())
def test_any_dataset_rows_train_or_name_the_file_and_row(scratch, data_rows, on_bad_rows, as_json):
    root = Path(tempfile.mkdtemp(dir=scratch))
    data = root / "data"
    data.mkdir()
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (data / "test.jsonl").write_text(json.dumps(good) + "\n")
    if as_json:
        (data / "train.json").write_text(json.dumps(data_rows))
    else:
        lines = [json.dumps(r) for r in data_rows]
        (data / "train.jsonl").write_text("".join(line + "\n" for line in lines))
    recipe = root / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "dataset_name": str(data),
                "output_dir": str(root / "run"),
                "report_to": "none",
                "on_bad_rows": on_bad_rows,
            }
        )
    )
    outcome, line = run_train([str(recipe)])
    if outcome == "error":
        assert "train.json" in line, line
    else:  # a row set that passes holds at least one well-formed pair
        assert any(
            isinstance(r, dict)
            and isinstance(r.get("chosen"), str)
            or isinstance(r, dict)
            and r.get("chosen")
            for r in data_rows
        )


@FAST
@given(st.binary(max_size=60))
def test_any_bytes_in_a_jsonl_line_are_named(scratch, raw):
    root = Path(tempfile.mkdtemp(dir=scratch))
    data = root / "data"
    data.mkdir()
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
    (data / "train.jsonl").write_bytes(good + b"\n" + raw + b"\n" + good + b"\n")
    recipe = root / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({"dataset_name": str(data), "output_dir": str(root / "run"), "report_to": "none"})
    )
    outcome, line = run_train([str(recipe)])
    if outcome == "error":
        assert "train.jsonl" in line, line


# ---------------------------------------------------------------- restarts at random points


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(["left", "right", "tie", "skip", "undo"]), min_size=1, max_size=10),
    st.integers(min_value=0, max_value=30),
    st.sampled_from(["_append", "_write_pairs"]),
)
def test_label_store_restarted_after_a_kill_at_any_point_loses_nothing(scratch, actions, kill_at, where):
    from hf_dpo.pairs.label_store import LabelStore

    root = Path(tempfile.mkdtemp(dir=scratch))
    samples = root / "s.jsonl"
    rows = [{"index": i, "prompt": f"q{i}", "completions": [f"a{i}", f"b{i}", f"c{i}"]} for i in range(4)]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "p.jsonl"
    store = LabelStore(samples, out)
    calls = {"n": 0}
    original = getattr(store, where)

    def maybe_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    setattr(store, where, maybe_die)
    expected = None
    for action in actions:
        try:
            if action == "undo":
                store.undo()
            else:
                cur = store.state()["current"]
                if cur is None:
                    break
                store.decide(cur["index"], action, cur["item"])
        except KeyboardInterrupt:
            break
    # Whatever was logged is what a restart shows, and the pairs file is rebuilt from it.
    again = LabelStore(samples, out)
    expected = again.pairs()
    written = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    assert written == expected
    for pair in written:
        assert pair["chosen"] != pair["rejected"]
    assert again.state()["done"] == len(again.decisions)
    assert not math.isnan(again.state()["done"])
