"""`ReportOptions`: how the report judges and counts, passed down whole from `evaluate_model` to the generation,
the judging and the comparison.

    options = ReportOptions.from_recipe(recipe.report, seed=recipe.training.seed)
    evaluate_model(run_dir, model, tokenizer, eval_dataset, pair_logps_fn=..., judge=judge, options=options)
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_dpo.config.report import ReportConfig


@dataclass(frozen=True)
class ReportOptions:
    """The report's settings: which held-out prompts are judged and how both sides decode them, and the
    intervals' confidence and seed. The recipe sets the first three (`ReportConfig`: eval_num_generations,
    eval_max_new_tokens, test_prompts_file); the rest are the Python API's."""

    num_generations: int = 32  # held-out prompts judged (0: no judged comparison)
    max_new_tokens: int = 256  # decoding cap; an answer that reaches it is unfinished
    prompts_file: str | None = None  # judged prompts (the recipe's test_prompts_file); None: the eval split's
    batch_size: int = 96  # prompts per generation batch
    do_sample: bool = False  # greedy by default: policy and reference each give their mode
    temperature: float = 1.0  # with do_sample only
    top_p: float = 1.0  # with do_sample only
    seed: int = 0  # sampling and bootstrap seed
    confidence: float = 0.95  # of every interval
    num_samples_shown: int = 4  # side-by-side answers in the report

    @classmethod
    def from_recipe(cls, report: ReportConfig, **others) -> ReportOptions:
        """The recipe's report keys, plus `others` (any other field)."""
        return cls(
            num_generations=report.eval_num_generations,
            max_new_tokens=report.eval_max_new_tokens,
            prompts_file=report.test_prompts_file,
            **others,
        )


DEFAULT_OPTIONS = ReportOptions()  # frozen: one shared default for every function that takes options
