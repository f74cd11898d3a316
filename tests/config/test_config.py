"""hf_dpo.config: recipes parse into typed configs; typos are errors that name the nearest key."""

import dataclasses
from pathlib import Path

import pytest

from hf_dpo.config import (
    RECIPE_SECTIONS,
    DataConfig,
    ModelConfig,
    RecipeError,
    ReportConfig,
    SamplingConfig,
    load_recipe,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "demo.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.model.model_name_or_path
    assert recipe.data.dataset_name or recipe.sampling.prompts_file


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_opens_with_its_command(path):
    head = "\n".join(path.read_text().splitlines()[:5])
    assert "make " in head or "hf-dpo " in head, f"{path.name} must open with the command that runs it"


def test_the_demo_recipe_quotes_the_readmes_measured_result_at_256_tokens():
    """recipes/demo.yaml said the reference was 'still 17/96' correct at 256 tokens (a count from before the
    judge was fixed) where the README's rerun at 256 gives 21 vs 15: one measurement, told the same in both."""
    import re

    recipe = (ROOT / "recipes" / "demo.yaml").read_text()
    readme = " ".join((ROOT / "README.md").read_text().split())
    at_256 = re.search(r"at 256 both score as at 128: (\d+ vs \d+) of \d+", recipe)
    assert at_256, "demo.yaml's eval_max_new_tokens comment must give the 256-token result"
    assert f"--max-new-tokens 256` on this run gives the same {at_256.group(1)}" in readme


def test_test_prompts_file_help_names_both_of_its_uses():
    """It is sampled into held-out pairs and it is what the report judges generations on."""
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(ReportConfig)}["test_prompts_file"]
    assert "hf-dpo sample" in help_text and "test.jsonl" in help_text
    assert "report" in help_text and "judges" in help_text


@pytest.mark.parametrize("section", [ModelConfig, DataConfig, SamplingConfig, ReportConfig])
def test_every_field_has_help(section):
    for f in dataclasses.fields(section):
        assert f.metadata.get("help"), f"{section.__name__}.{f.name} has no help text"


def test_dpo_fields_have_help():
    from transformers import TrainingArguments

    from hf_dpo.config import DPOConfig

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    for f in dataclasses.fields(DPOConfig):
        if f.name not in base or f.name == "remove_unused_columns":
            assert f.metadata.get("help"), f"DPOConfig.{f.name} has no help text"


def test_the_report_keys_are_the_report_section_and_a_run_recipe_reads_them_back(tmp_path):
    """judge, test_prompts_file, eval_num_generations and eval_max_new_tokens are written as flat keys, as ever,
    and land in recipe.report (step 1 reads the judge and held-out prompts there); a run's recipe.yaml re-reads
    to the same section."""
    recipe = load_recipe(ROOT / "recipes" / "demo.yaml", ["--eval_num_generations", "5"])
    assert recipe.report.judge == "hf_dpo.pairs.demo_task:judge"
    assert recipe.report.test_prompts_file == "recipes/data/demo/prompts_test.txt"
    assert recipe.report.eval_num_generations == 5
    assert not {"judge", "test_prompts_file", "eval_num_generations"} & {
        f.name for f in dataclasses.fields(SamplingConfig)
    }
    saved = tmp_path / "recipe.yaml"
    saved.write_text(recipe.to_yaml())
    assert load_recipe(saved).report == recipe.report
    with pytest.raises(RecipeError, match="key 'eval_max_new_tokens'"):
        load_recipe(None, ["--eval_max_new_tokens", "0"])


def test_no_key_is_owned_twice():
    """One key, one section, except trust_remote_code: a model key and a TRL DPOConfig key; one option sets both."""
    seen = {}
    for section in RECIPE_SECTIONS:
        for f in dataclasses.fields(section):
            if f.name != "trust_remote_code":
                assert f.name not in seen, f"{f.name} is in {section.__name__} and {seen[f.name]}"
            seen[f.name] = section.__name__
    recipe = load_recipe(None, ["--trust_remote_code", "true"])
    assert recipe.model.trust_remote_code and recipe.training.trust_remote_code


def trl_only_fields():
    from transformers import TrainingArguments
    from trl import DPOConfig as TRLConfig

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    return [f for f in dataclasses.fields(TRLConfig) if f.init and f.name not in inherited]


def test_trl_dpo_config_keyword_arguments_construct_ours(tmp_path):
    """Every keyword argument of TRL 1.16's DPOConfig, at TRL's defaults, builds hf_dpo's DPOConfig; each is a
    recipe key with help text."""
    from hf_dpo.config import DPOConfig

    kwargs = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in trl_only_fields()
    }
    assert len(kwargs) >= 25
    args = DPOConfig(output_dir=str(tmp_path), **kwargs)
    assert args.loss_type == ["sigmoid"] and args.disable_dropout and args.pad_to_multiple_of is None
    help_text = {f.name: f.metadata.get("help") for f in dataclasses.fields(DPOConfig)}
    assert all(help_text.get(name) for name in kwargs), [n for n in kwargs if not help_text.get(n)]


def test_a_trl_dpo_config_converts_field_by_field(tmp_path):
    """DPOConfig(**{every init field of a TRL DPOConfig instance}) works, TrainingArguments' objects included."""
    from trl import DPOConfig as TRLConfig

    from hf_dpo.config import DPOConfig

    trl = TRLConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        loss_type=["ipo", "sft"],
        loss_weights=[1.0, 0.5],
        ld_alpha=0.3,
        use_weighting=True,
        f_divergence_type="js_divergence",
        pad_to_multiple_of=8,
        label_smoothing=0.2,
        precompute_ref_batch_size=4,
        model_init_kwargs={"dtype": "float32"},
    )
    ours = DPOConfig(**{f.name: getattr(trl, f.name) for f in dataclasses.fields(TRLConfig) if f.init})
    for name in (
        "loss_type",
        "loss_weights",
        "ld_alpha",
        "use_weighting",
        "f_divergence_type",
        "label_smoothing",
    ):
        assert getattr(ours, name) == getattr(trl, name), name
    assert ours.pad_to_multiple_of == 8 and ours.model_init_kwargs == {"dtype": "float32"}


def test_loss_type_takes_trl_list_form_a_string_and_rpo_alpha():
    recipe = load_recipe(None, ["--loss_type", "ipo", "sft", "--loss_weights", "1", "0.5"])
    assert recipe.training.loss_type == ["ipo", "sft"] and recipe.training.loss_weights == [1.0, 0.5]
    assert load_recipe(None, ["--loss_type", "hinge"]).training.loss_type == ["hinge"]
    rpo = load_recipe(None, ["--rpo_alpha", "0.5"]).training
    assert rpo.loss_type == ["sigmoid", "sft"] and rpo.loss_weights == [1.0, 0.5]  # RPO = DPO + 0.5 x SFT


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--ref_model_mixup_alpha", "1.5"], "ref_model_mixup_alpha"),
        (["--truncation_mode", "keep_end"], "only keep_start"),
        (["--loss_type", "exo_pair"], "exo_pair loss needs label_smoothing > 0"),
        (["--loss_type", "aot", "--use_weighting"], "does not apply to aot"),
        (["--loss_type", "bco_pair", "--f_divergence_type", "forward_kl"], "applies only to"),
        (["--loss_type", "sigmoid", "hinge", "--loss_weights", "1"], "one weight per loss type"),
        (["--loss_type", "sigmod"], "Did you mean 'sigmoid'"),
    ],
)
def test_what_cannot_apply_is_a_clear_error(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, overrides)


def test_unknown_key_names_the_file_and_nearest_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\nlora_rnak: 8\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown key 'lora_rnak'. Did you mean 'lora_r'"):
        load_recipe(bad)


def test_unknown_override_is_an_error():
    with pytest.raises(RecipeError, match="command line: unknown key 'lerning_rate'.*'learning_rate'"):
        load_recipe(RECIPES[0], ["--lerning_rate", "1e-4"])


def test_a_bad_value_names_where_it_came_from(tmp_path):
    """A value the recipe's checks refuse is blamed on the command line when it was given there, on the file
    when it is the file's, and a check between two keys names the override that made the file's value fail."""
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("beta: 0.1\nmax_length: 128\nmax_prompt_length: 96\n")
    with pytest.raises(RecipeError, match=r"^command line: key 'beta': must be > 0"):
        load_recipe(recipe_file, ["--beta", "-1"])
    recipe_file.write_text("beta: -1\n")
    with pytest.raises(
        RecipeError, match=r"^Recipe .*r.yaml \(with --learning_rate from the command line\): key 'beta'"
    ):
        load_recipe(recipe_file, ["--learning_rate", "1e-4"])
    with pytest.raises(RecipeError, match=r"^Recipe .*r.yaml: key 'beta'"):
        load_recipe(recipe_file)
    recipe_file.write_text("max_length: 128\nmax_prompt_length: 96\n")
    with pytest.raises(
        RecipeError, match=r"\(with --max_length from the command line\): key 'max_prompt_length'"
    ):
        load_recipe(recipe_file, ["--max_length", "64"])


def test_overrides_are_typed_and_win_over_the_recipe(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("lora_r: 8\nlearning_rate: 5.0e-5\ndataset_name: data.jsonl\n")
    recipe = load_recipe(
        recipe_file,
        [
            "--lora_r",
            "4",
            "--learning_rate=1e-3",
            "--gradient_checkpointing",
            "--lora_target_modules",
            "[q_proj, v_proj]",
        ],
    )
    assert recipe.model.lora_r == 4
    assert recipe.training.learning_rate == pytest.approx(1e-3)
    assert recipe.training.gradient_checkpointing is True
    assert recipe.model.lora_target_modules == ["q_proj", "v_proj"]
    assert recipe.training.output_dir == "runs/r"
    assert recipe.values["lora_r"] == 4


def test_bad_values_are_named(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("loss_type: kto\n")
    with pytest.raises(RecipeError, match="r.yaml.*loss_type.*'kto'"):
        load_recipe(recipe_file)
    recipe_file.write_text("learning_rate: fast\n")
    with pytest.raises(RecipeError, match="learning_rate.*expected a number"):
        load_recipe(recipe_file)
    recipe_file.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(recipe_file)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_greedy_sampling_of_several_answers_is_refused_at_recipe_read(tmp_path, capsys):
    """Before: sampling_temperature 0 sampled every answer of a prompt identically, for as long as sampling took,
    and only then did labelling warn that no pair came out."""
    from hf_dpo import cli

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("sampling_temperature: 0\nnum_samples_per_prompt: 3\n")
    message = r"r.yaml: key 'sampling_temperature': 0 is greedy.*num_samples_per_prompt \(3\).*0\.7-1\.0"
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe_file)
    with pytest.raises(RecipeError, match=r"key 'sampling_temperature'.*num_samples_per_prompt \(4\)"):
        load_recipe(None, ["--sampling_temperature", "0.0"])
    with pytest.raises(RecipeError, match="num_samples_per_prompt"):
        SamplingConfig(sampling_temperature=0)  # from Python too
    # hf-dpo sample: one error line, before preflight and the reference model
    rc = cli.main(["sample", str(ROOT / "recipes" / "demo_pairs.yaml"), "--sampling_temperature", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "num_samples_per_prompt (4)" in err
    assert load_recipe(None, ["--sampling_temperature", "0.01"]).sampling.sampling_temperature == 0.01


def test_saved_recipe_never_holds_the_token(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("dataset_name: d.jsonl\n")
    recipe = load_recipe(recipe_file, ["--hub_token", "hf_secret123"])
    assert recipe.training.hub_token == "hf_secret123"
    assert "hf_secret123" not in recipe.to_yaml()


def test_every_n_layers_is_checked(tmp_path, monkeypatch):
    recipe = tmp_path / "ckpt.yaml"
    recipe.write_text(
        "model_name_or_path: x\ngradient_checkpointing: true\n"
        "gradient_checkpointing_kwargs: {use_reentrant: false, every_n_layers: 2}\n"
    )
    loaded = load_recipe(str(recipe))
    assert loaded.training.activation_checkpointing_kwargs["every_n_layers"] == 2
    with pytest.raises(RecipeError, match="every_n_layers must be an integer >= 1"):
        load_recipe(str(recipe), ["--gradient_checkpointing_kwargs", '{"every_n_layers": 0}'])
    # a transformers without selective checkpointing: a clear error at load time, not a TypeError at step 1
    from transformers import PreTrainedModel

    monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_enable")
    with pytest.raises(RecipeError, match="needs a transformers with selective checkpointing"):
        load_recipe(str(recipe))


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        # a float for an int key past 2^53 was turned into another integer and a run toward it started
        ("max_steps", "1.0e+30", r"1e\+30 is a float past 2\^53, .*read as 100000000000000001988"),
        ("per_device_train_batch_size", "1.0e+17", r"is a float past 2\^53"),
        # an int past 64 bits, for an int key and for a float key
        ("max_steps", "1000000000000000000000000000000", r"is past the 64-bit integers"),
        ("learning_rate", "100000000000000000000000000000000000000", r"is past the 64-bit integers"),
        # under 2^53 but past the key's bound: what it would mean
        ("max_steps", "1.0e+12", r"1000000000000 is over 100000000 \(10\^8 steps take over 3 years"),
        ("num_train_epochs", "1.0e+9", r"is over 1000000 \(a million passes over the data\)"),
        ("warmup_steps", "100000000000", r"is over 100000000 \(10\^8 steps"),
        ("per_device_train_batch_size", "1000000", r"is over 65536 \(65536 rows in one batch"),
        ("max_length", "100000000", r"is over 4194304 \(4M tokens"),
        ("lora_r", "10000000", r"is over 65536 \(a LoRA rank past"),
        ("eval_num_generations", "1000000000", r"is over 10000000 \(10\^7 generations"),
        ("num_samples_per_prompt", "100000", r"is over 1024 \(each one is a generation"),
        ("dataloader_num_workers", "100000", r"is over 1024 \(more processes"),
        ("max_train_samples", "10000000000000", r"is over 1000000000000 \(more pairs"),
    ],
)
def test_counts_sizes_and_steps_have_a_bound_that_says_what_past_it_would_mean(tmp_path, key, value, said):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"{key}: {value}\n")
    with pytest.raises(RecipeError, match=rf"key '{key}': .*{said}"):
        load_recipe(recipe)
    if key == "learning_rate":  # on the command line a float key reads the digits as the float 1e38
        return
    # the command line reads an int key's text with int(): "1.0e+30" is refused as no whole number there
    said = said if "float past" not in said and "." not in value else ""
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': .*{said}"):
        load_recipe(None, [f"--{key}", value])


def test_whole_floats_within_exact_range_and_bounds_still_read_as_ints(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 1.0e+3\nper_device_train_batch_size: 8.0\nmax_length: 4194304\n")
    training = load_recipe(recipe).training
    assert (training.max_steps, training.per_device_train_batch_size, training.max_length) == (
        1000,
        8,
        4194304,
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["eval", "r", "--num-generations", "10000000000"], "is over 10000000"),
        (["eval", "r", "--max-new-tokens", "1" + "0" * 30], "is over 4194304"),
    ],
)
def test_command_options_that_count_have_a_bound_too(argv, said, capsys):
    from hf_dpo import cli

    with pytest.raises(SystemExit):
        cli.main(argv)
    assert said in capsys.readouterr().err


def test_keys_known_without_transformers_are_the_recipes_keys():
    """hf_dpo.config.keys reads TrainingArguments from transformers' source, not by importing it: the same fields
    in the same order, with the same help and the same literal defaults as dataclasses.fields gives, and so the
    same recipe keys as the recipe loader."""
    from transformers import TrainingArguments

    from hf_dpo.config import all_field_names
    from hf_dpo.config.keys import _dataclass_keys, recipe_key_names, trainer_argument_keys

    read = trainer_argument_keys()
    imported = _dataclass_keys(TrainingArguments)
    assert [k.name for k in read] == [k.name for k in imported] and len(read) > 100
    assert [k.help for k in read] == [k.help for k in imported]
    differ = [(r.name, r.default, i.default) for r, i in zip(read, imported) if r.default != i.default]
    # the one default transformers computes at import (by platform) is shown by its name
    assert [name for name, _, _ in differ] in ([], ["optim"]), differ
    assert recipe_key_names() == sorted(all_field_names())


def test_unset_bf16_and_checkpointing_are_trl_defaults_where_the_hardware_allows(monkeypatch, caplog):
    """TRL's DPOConfig defaults bf16 and gradient_checkpointing to true: so does hf_dpo's on a GPU with bf16; on
    CPU they stay off, and each difference from TRL is logged once per process."""
    import logging
    from types import SimpleNamespace

    import torch

    from hf_dpo import config
    from hf_dpo.config import dpo_checks

    monkeypatch.setattr(dpo_checks, "_LOGGED_DEFAULT_DIFFERENCES", set())
    with caplog.at_level(logging.INFO, logger="hf_dpo.config"):
        cpu = config.DPOConfig(output_dir="unused", report_to="none", use_cpu=True)
        again = config.DPOConfig(output_dir="unused", report_to="none", use_cpu=True)
    assert (cpu.bf16, cpu.gradient_checkpointing, again.bf16) == (False, False, False)
    logged = [r.getMessage() for r in caplog.records if "differ from TRL" in r.getMessage()]
    assert (
        len(logged) == 1
        and "bf16=False (TRL: True" in logged[0]
        and "gradient_checkpointing=False" in logged[0]
    )
    assert config.DPOConfig(
        output_dir="unused", gradient_checkpointing=True, use_cpu=True
    ).gradient_checkpointing

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    unset = dict(
        bf16=None, fp16=False, gradient_checkpointing=None, use_cpu=False, precompute_ref_log_probs=False
    )
    gpu = SimpleNamespace(**unset)
    dpo_checks.resolve_trl_defaults(gpu)
    assert gpu.bf16 is True and gpu.gradient_checkpointing is True  # TRL's
    half = SimpleNamespace(**{**unset, "fp16": True})
    dpo_checks.resolve_trl_defaults(half)
    assert half.bf16 is False  # fp16 asked: not both


def test_the_iterate_demo_recipe_runs_the_demo_and_its_pairs_recipe():
    """recipes/demo_iterate.yaml repeats demo.yaml's training keys and demo_pairs.yaml's sampling keys: a change to
    either that is not made there too would make `make iterate`'s round 1 another run than `make demo`."""
    import yaml

    def keys(name):
        return yaml.safe_load((ROOT / "recipes" / name).read_text(encoding="utf-8"))

    iterate, demo, pairs = keys("demo_iterate.yaml"), keys("demo.yaml"), keys("demo_pairs.yaml")
    own = {"output_dir", "overwrite_output_dir", "pairs_file", "gradient_accumulation_steps"}
    for name, source in (("demo.yaml", demo), ("demo_pairs.yaml", pairs)):
        differ = {
            k: (v, iterate.get(k)) for k, v in source.items() if k not in own and iterate.get(k, v) != v
        }
        assert not differ, f"recipes/demo_iterate.yaml differs from {name} on {differ}"
    assert set(demo) - own <= set(iterate), set(demo) - own - set(iterate)
