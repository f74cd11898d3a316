"""`ReportConfig`: the evaluation report at the end of a run: which judge scores policy and reference, on which
held-out prompts, how many and how long. Step 1 (`hf-dpo sample`) reads `judge` and `test_prompts_file` from here
too: it labels its pairs with the judge the report judges with, and samples the held-out prompts the report
judges on, so the pairs and the report agree on what a better answer is."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_dpo.config.errors import RecipeError
from hf_dpo.validate import GENERATIONS, TOKENS, check_values, up_to


@dataclass
class ReportConfig:
    """The report's keys: its judge, its held-out prompts, and the judged generations' count and cap."""

    judge: str | None = field(
        default=None,
        metadata={
            "help": "Scores completions, for the report and for hf-dpo sample's labels: 'module:function' (callable(prompt, completion) -> float), or a reward "
            "model (Hub id or local path of an AutoModelForSequenceClassification), prefixed 'rm:'."
        },
    )
    test_prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out prompts the report judges policy and reference on; hf-dpo sample samples and labels "
            "them the same way into test.jsonl beside pairs_file."
        },
    )
    eval_num_generations: int = field(
        default=32,
        metadata={
            "range": up_to(0, GENERATIONS),
            "help": "Held-out prompts on which the end-of-training report generates from policy and reference "
            "and lets the judge pick (0: skip the judged comparison).",
        },
    )
    eval_max_new_tokens: int = field(
        default=256,
        metadata={
            "range": up_to(1, TOKENS),
            "help": "Cap on new tokens of the report's judged generations; answers decode until their end token "
            "and one that reaches the cap is reported as unfinished (never judged as a whole answer).",
        },
    )

    def __post_init__(self):
        check_values(self, RecipeError)
