"""DPO preference metrics as an `evaluate` module: reward accuracy, margins, rewards and log-prob shifts of a
policy against its reference on preference pairs, each with a 95% interval. The report's numbers are computed
through this module.

    import evaluate
    metric = evaluate.load("<site-packages>/hf_dpo/report/evaluate_modules/dpo_preference")
    metric.compute(policy_chosen_logps=[...], policy_rejected_logps=[...],
                   ref_chosen_logps=[...], ref_rejected_logps=[...], beta=0.1)

It ships inside hf_dpo and loads offline from its directory (`hf_dpo.report.evaluate_offline.load`).
"""

import datasets
import evaluate

from hf_dpo.report.estimates import plain, preference_metrics
from hf_dpo.train.loss import LOGPS_ROUNDING

_CITATION = """\
@inproceedings{rafailov2023direct,
  title     = {Direct Preference Optimization: Your Language Model is Secretly a Reward Model},
  author    = {Rafailov, Rafael and Sharma, Archit and Mitchell, Eric and Manning, Christopher D. and Ermon, Stefano and Finn, Chelsea},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023}
}
"""

_DESCRIPTION = """\
Held-out DPO metrics from per-pair sequence log-probs. The implicit reward of a response is
beta * (log pi(y|x) - log pi_ref(y|x)) (DPO paper, eq. 5). reward_accuracy is the share of pairs whose chosen
reward exceeds the rejected one (a tie counts as wrong), with a Wilson interval; means carry a fixed-seed
percentile bootstrap interval.
"""

_KWARGS_DESCRIPTION = """\
Args:
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: one sequence log-prob
        (sum over the response's tokens) per pair.
    beta: the DPO temperature used in training.
    confidence: interval level (default 0.95).
    seed: bootstrap seed (default 0).
    rounding: the log-probs' relative rounding, by the dtype the forward ran in (default: float32's,
        `hf_dpo.train.loss.logps_rounding`); a margin within it is a tie.
Returns:
    a dict name -> {value, low, high, n, method, confidence} for reward_accuracy, rewards/margins,
    rewards/chosen, rewards/rejected, logp_shift/chosen, logp_shift/rejected, logp_shift/mean.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DpoPreference(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "policy_chosen_logps": datasets.Value("float64"),
                    "policy_rejected_logps": datasets.Value("float64"),
                    "ref_chosen_logps": datasets.Value("float64"),
                    "ref_rejected_logps": datasets.Value("float64"),
                }
            ),
        )

    def _compute(
        self,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=0.1,
        confidence=0.95,
        seed=0,
        rounding=LOGPS_ROUNDING,
    ):
        metrics = preference_metrics(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=beta,
            confidence=confidence,
            seed=seed,
            rounding=rounding,
        )
        return plain(metrics)
