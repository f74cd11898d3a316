"""Judges: score completions of prompts, for labelling sampled pairs and for the evaluation's win rate.

A judge is anything with a `name` and `score(prompts, completions) -> list[float]` (higher is better).
`load_judge` builds one from a recipe's `judge:` value:

    load_judge("hf_dpo.pairs.demo_task:judge")     # a Python callable (prompt, completion) -> float or criteria
    load_judge("rm:path/or/hub-id")          # a reward model (AutoModelForSequenceClassification, 1 output)
    load_judge(my_function)                   # a callable directly

Criteria. A Python judge may return named criteria instead of one float, most important first:

    def judge(prompt, completion):
        return {"correct": 1.0, "concise": 0.0}
    judge.criteria = ("correct", "concise")      # the declared order of importance

Answers are then compared criterion by criterion (lexicographically): a concise wrong answer never beats a
correct one. Without `criteria` the dict's own key order is the order. `criteria_scores()` gives the tuples
(in `judge.criteria` order) and `judge_criteria(judge)` the names, for any judge: a plain float judge or a
reward model has the single criterion "score". `score()` stays one float per answer (the sum of the
criteria), for callers that want one number.

Conversations. A prompt is given to a judge as it was given to the model: a string, or for a conversation its
message list (system prompt and earlier turns included). A judge says by how it is written that it reads message
lists, and then gets them whole:

    def judge(prompt: str | list[dict], completion: str) -> float: ...   # the prompt's annotation admits a list
    judge.conversations = True                                           # or declared (also on a judge object)

Any other judge is a plain-text judge, and gets a conversation's last user turn as its prompt. A reward model
(`rm:`) reads the whole exchange through its chat template.

Questions. A judge may also say which prompts ask the same question (phrasings of one item), so the report does
not count five phrasings as five independent results: `judge.question_of = lambda prompt: key`.

Every score is checked: a judge that raises or returns anything but a finite number (or a dict of them with
the declared names) stops with a `JudgeError` naming the prompt. `check_judge` checks a recipe's judge before
any model loads (`hf_dpo.preflight` calls it).

Why one file over 400 lines: the two judge kinds (a Python callable, a reward model) share the checks every score
passes and the rule for what prompt a judge receives; split apart, each half would import the other's checks.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from hf_dpo.errors import HfDpoError, quoted, shortened
from hf_dpo.pairs.formats import Prompt, prompt_text

# How a judge's error after sampling ends: the samples are on disk, so fixing the judge loses nothing.
RERUN_KEEPS_SAMPLES = "and rerun: the samples are kept."


class JudgeError(HfDpoError, ValueError):
    """A judge could not be loaded or gave an unusable score; the message names the prompt and the fix."""


@runtime_checkable
class Judge(Protocol):
    name: str

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]: ...


def takes_conversations(judge) -> bool:
    """Whether `judge` (a function, or a judge object) reads a conversation's message list as its prompt, as it
    declares by how it is written: `conversations = True` on it, or, for a function, a prompt parameter (the
    first) whose annotation admits a list (`str | list[dict]`, `list[dict]`). Decided once per judge, never from
    the prompts it is given."""
    declared = getattr(judge, "conversations", None)
    if declared is not None:
        return declared is True
    if not callable(judge) or hasattr(judge, "score"):
        return False
    return _first_parameter_admits_list(judge)


def _first_parameter_admits_list(fn) -> bool:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional or positional[0].annotation is inspect.Parameter.empty:
        return False
    annotation = positional[0].annotation
    if isinstance(annotation, str):  # `from __future__ import annotations`: resolve it in the judge's module
        try:
            annotation = typing.get_type_hints(fn)[positional[0].name]
        except Exception:  # noqa: BLE001 - a name only imported under TYPE_CHECKING: read the words
            return "list" in annotation or "Prompt" in annotation
    return _admits_list(annotation)


def _admits_list(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is list or origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_admits_list(arg) for arg in typing.get_args(annotation))
    return False


def judge_prompts(judge, prompts: Sequence[Prompt]) -> list[Prompt]:
    """The prompts as `judge` reads them: as given for a judge that takes conversations; else each
    conversation's last user turn (hf_dpo.pairs.formats.prompt_text)."""
    if takes_conversations(judge):
        return list(prompts)
    return [p if isinstance(p, str) else prompt_text(p) for p in prompts]


Criteria = tuple[float, ...]  # one value per criterion, most important first; compared lexicographically
SINGLE_CRITERION = ("score",)


def judge_criteria(judge) -> tuple[str, ...]:
    """The criterion names of any judge, most important first: ("score",) for one-number judges."""
    return tuple(getattr(judge, "criteria", None) or SINGLE_CRITERION)


def judge_questions(judge, prompts: Sequence[Prompt]) -> list[str] | None:
    """Per prompt, the question it asks, where the judge declares `question_of(prompt) -> key` beside its
    criteria (`judge.question_of = ...`): prompts with one key are phrasings of one question, and the report's
    intervals resample them together. None where the judge declares none (every prompt its own question).
    question_of reads each prompt as the judge does (`judge_prompts`)."""
    question_of = getattr(judge, "question_of", None)  # a declared attribute of the judge, like `criteria`
    if question_of is None:
        return None
    keys = []
    for i, prompt in enumerate(judge_prompts(judge, prompts)):
        try:
            keys.append(str(question_of(prompt)))
        except Exception as err:
            name = getattr(judge, "name", type(judge).__name__)
            raise JudgeError(
                f"Judge '{name}': question_of raised {type(err).__name__}: {err} on prompt {i} "
                f"({_prompt_shown(prompt)!r}). Make it return a key for every prompt the judge scores."
            ) from err
    return keys


def criteria_scores(judge, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Criteria]:
    """Per answer, the tuple of criterion values in `judge_criteria(judge)` order (any judge, or a callable);
    each prompt as the judge reads it (`judge_prompts`)."""
    if isinstance(judge, (CallableJudge, RewardModelJudge)):
        return judge.criteria_scores(prompts, completions)  # they check every value themselves
    prompts = judge_prompts(judge, prompts)
    if hasattr(judge, "criteria_scores"):
        return _checked_criteria(judge, prompts, completions)
    if hasattr(judge, "score"):
        return [(value,) for value in _checked_scores(judge, prompts, completions)]
    return [(float(judge(p, c)),) for p, c in zip(prompts, completions)]


def _called(judge, method: str, prompts: Sequence[str], completions: Sequence[str]) -> list:
    """`judge.<method>(prompts, completions)` of a judge object (one not wrapped by CallableJudge) as a list: an
    exception or a result that is no list is a JudgeError naming the judge, never a bare error from inside."""
    name = getattr(judge, "name", type(judge).__name__)
    try:
        values = getattr(judge, method)(prompts, completions)
    except HfDpoError:
        raise
    except Exception as err:
        raise JudgeError(
            f"Judge '{name}' raised {type(err).__name__}: {err} while scoring {len(prompts)} completions. Make the "
            f"judge handle them (or return 0.0 for one it cannot score) {RERUN_KEEPS_SAMPLES}"
        ) from err
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        what = "float" if method == "score" else "tuple of criteria"
        raise JudgeError(
            f"Judge '{name}' returned {quoted(values, 60)} from {method}(); it must return a list of one "
            f"{what} per completion ({len(prompts)})."
        )
    return list(values)


def _checked_scores(judge, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """`judge.score(...)` of a judge object as checked floats: a value that is no finite number (None, "0.5") is
    a JudgeError naming the judge and prompt, never a TypeError from inside float()."""
    name = getattr(judge, "name", type(judge).__name__)
    values = _called(judge, "score", prompts, completions)
    return [check_score(_as_float(v), i, _at(prompts, i), name) for i, v in enumerate(values)]


def _checked_criteria(judge, prompts: Sequence[str], completions: Sequence[str]) -> list[Criteria]:
    """`judge.criteria_scores(...)` of a judge object, each answer's value a tuple of one finite number per
    criterion of `judge_criteria(judge)`: a shorter or longer tuple would be ranked and gated on the wrong
    criterion (or raise IndexError), so it is a JudgeError naming the prompt."""
    name = getattr(judge, "name", type(judge).__name__)
    rows = []
    for i, values in enumerate(_called(judge, "criteria_scores", prompts, completions)):
        criteria = judge_criteria(
            judge
        )  # after the call: a judge may learn its criteria from its first answer
        if (
            isinstance(values, (str, bytes, dict))
            or not hasattr(values, "__len__")
            or len(values) != len(criteria)
        ):
            raise JudgeError(
                f"Judge '{name}' returned {quoted(values, 60)} for prompt {i} ({_prompt_shown(_at(prompts, i))!r}); "
                f"its criteria_scores() must give one tuple of {len(criteria)} numbers ({', '.join(criteria)}) "
                "per completion."
            )
        rows.append(tuple(check_score(_as_float(v), i, _at(prompts, i), name) for v in values))
    return rows


def _at(prompts: Sequence[str], i: int) -> str:
    return (
        prompts[i] if i < len(prompts) else ""
    )  # a judge may return more values than prompts: counted later


def _as_float(value):
    """A number-like value (a numpy or 0-d torch scalar) as a float; anything else as it is, for `check_score` to
    name. A string is never read as a number: "0.5" is a judge's bug, not a score."""
    if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__float__"):
        return value
    try:
        return float(value)
    except Exception:  # noqa: BLE001 - a tensor of several values, an object whose __float__ raises
        return value


def _prompt_shown(prompt: Prompt, limit: int = 80) -> str:
    """A prompt for an error message on one line: its text, or a conversation's last user turn."""
    return shortened(prompt if isinstance(prompt, str) else prompt_text(prompt), limit)


def check_score(value, index: int, prompt: str, judge_name: str) -> float:
    """`value` as a float, or JudgeError if it is not a finite real number (bools, None and ints too large for
    a float, such as 10**400, included)."""
    number = None
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            number = None
    if number is None or not math.isfinite(number):
        try:
            shown = shortened(repr(value), 60)
        except Exception:  # noqa: BLE001 - repr of a 10**5000 int raises; the type is enough then
            shown = "<unprintable>"
        raise JudgeError(
            f"Judge '{judge_name}' returned {shown} ({type(value).__name__}) for prompt {index} "
            f"({_prompt_shown(prompt)!r}); a judge must return a finite float for every completion. Fix the judge "
            f"(e.g. return 0.0 for an answer it cannot score) {RERUN_KEEPS_SAMPLES}"
        )
    return number


class CallableJudge:
    """Wraps `fn(prompt, completion) -> float | dict[str, float]`, checking every score.

    `criteria` are fn.criteria when declared; otherwise found on the first call: ("score",) for a float,
    the dict's key order for a dict. Every later answer must give the same kind and the same names.
    `conversations`: whether fn reads message lists (`takes_conversations`); else it gets the last user turn.
    """

    def __init__(self, fn: Callable[[str, str], float | dict[str, float]], name: str | None = None):
        self.fn = fn
        self.name = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        declared = getattr(fn, "criteria", None)
        self.criteria: tuple[str, ...] | None = tuple(declared) if declared else None
        self.conversations = takes_conversations(fn)
        # Declared with the criteria: which prompts ask the same question (see `judge_questions`).
        self.question_of: Callable[[Prompt], str] | None = getattr(fn, "question_of", None)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One float per answer: the judge's value, or the sum of its criteria."""
        return [sum(values) for values in self.criteria_scores(prompts, completions)]

    def criteria_scores(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Criteria]:
        if len(prompts) != len(completions):
            raise JudgeError(
                f"score() needs as many prompts as completions ({len(prompts)} != {len(completions)})."
            )
        scores = []
        for i, (prompt, completion) in enumerate(zip(judge_prompts(self, prompts), completions)):
            try:
                value = self.fn(prompt, completion)
            except Exception as err:
                raise JudgeError(
                    f"Judge '{self.name}' raised {type(err).__name__}: {err} on prompt {i} ({_prompt_shown(prompt)!r}), "
                    f"completion {shortened(completion)!r}. Make the judge handle this input (or return 0.0 for it) "
                    f"{RERUN_KEEPS_SAMPLES}"
                ) from err
            scores.append(self._as_criteria(value, i, prompt))
        return scores

    def _as_criteria(self, value, index: int, prompt: str) -> Criteria:
        if isinstance(value, dict):
            if self.criteria is None:
                self.criteria = tuple(value)
            if set(value) != set(self.criteria):
                raise JudgeError(
                    f"Judge '{self.name}' returned criteria {sorted(value)} for prompt {index} ({_prompt_shown(prompt)!r}), "
                    f"but its criteria are {list(self.criteria)}. Return the same names for every answer "
                    "(declare them, most important first, as `judge.criteria = (...)`)."
                )
            return tuple(
                check_score(value[name], index, prompt, f"{self.name}[{name}]") for name in self.criteria
            )
        if self.criteria is None:
            self.criteria = SINGLE_CRITERION
        if self.criteria != SINGLE_CRITERION:
            raise JudgeError(
                f"Judge '{self.name}' returned {quoted(value)} for prompt {index} ({_prompt_shown(prompt)!r}) but declares the "
                f"criteria {list(self.criteria)}: return a dict with those names for every answer."
            )
        return (check_score(value, index, prompt, self.name),)


class RewardModelJudge:
    """A sequence-classification reward model with one output; the logit is the score.

    It reads conversations whole: the exchange (a conversation's every turn, system prompt included, or a text
    prompt as one user turn, then the completion as the assistant's turn) is rendered through the tokenizer's chat
    template when it has one; else with the tokenizer's special tokens, as such models are trained: a text pair
    (`[CLS] prompt [SEP] completion [SEP]`) for a tokenizer with a separator token (BERT, DeBERTa), else
    prompt + completion as one text (a BOS in front, as TRL's RewardTrainer tokenizes), a conversation written
    out as `Role: content` turns.
    """

    conversations = True

    def __init__(self, name_or_path: str, batch_size: int = 8, device: str | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.name = f"rm:{name_or_path}"  # as given: a card shows it, never the expanded home directory
        self.criteria = SINGLE_CRITERION
        self.batch_size = batch_size
        name_or_path = reward_model_location(name_or_path)
        try:
            config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise JudgeError(f"Could not load reward model '{name_or_path}': {err}") from None
        check_reward_model_config(config, name_or_path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _encode(self, prompts: Sequence[Prompt], completions: Sequence[str]):
        """A batch of (prompt, completion) exchanges as the reward model reads them: (B, T) tensors."""
        if getattr(self.tokenizer, "chat_template", None):  # the rendered template holds its special tokens
            texts = [
                self.tokenizer.apply_chat_template(
                    _turns(p) + [{"role": "assistant", "content": c}], tokenize=False
                )
                for p, c in zip(prompts, completions)
            ]
            return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        texts = [p if isinstance(p, str) else _transcript(p) for p in prompts]
        # Without its special tokens a [CLS]-pooled model would score from an arbitrary token.
        if self.tokenizer.sep_token is not None:
            return self.tokenizer(texts, list(completions), return_tensors="pt", padding=True)
        return self.tokenizer([p + c for p, c in zip(texts, completions)], return_tensors="pt", padding=True)

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            batch = self._encode(prompts[start:end], completions[start:end]).to(self.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits  # (B, 1)
            for offset, value in enumerate(logits[:, 0].float().tolist()):
                i = start + offset
                scores.append(check_score(value, i, prompts[i], self.name))
        return scores

    def criteria_scores(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Criteria]:
        return [(value,) for value in self.score(prompts, completions)]


def _turns(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat turns: a conversation's own, a text as one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _transcript(conversation: list[dict[str, str]]) -> str:
    """A conversation as text for a reward model without a chat template: `Role: content` turns, the assistant's
    turn opened last for the completion to follow."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n\n".join(turns) + "\n\nAssistant: "


def check_reward_model_config(config, name: str) -> None:
    """What RewardModelJudge needs of a model's config (the preflight asks it too, before training): a
    *ForSequenceClassification with one output, a scalar reward. `name` names the model in the error."""
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise JudgeError(
            f"'{name}' is not a reward model: its architectures are {architectures or 'unknown'}, "
            "not a *ForSequenceClassification with one output. Give a reward model (e.g. trained with "
            "TRL's RewardTrainer) or a Python judge as 'module:function'."
        )
    if config.num_labels != 1:
        raise JudgeError(
            f"Reward model '{name}' has {config.num_labels} outputs; a judge needs exactly one "
            "(a scalar reward). Use a reward model with num_labels=1."
        )


def reward_model_location(name_or_path: str) -> str:
    """What transformers loads for `rm:<name_or_path>`: a recipe's `~/rm` is the home directory (no shell
    expanded it), anything else as given (a Hub id, a path)."""
    name_or_path = name_or_path.strip()
    return os.path.expanduser(name_or_path) if name_or_path.startswith("~") else name_or_path


def load_judge(spec: str | Callable) -> Judge:
    """A judge from a recipe value: 'module:function', 'rm:<hub id or path>', or a callable."""
    if isinstance(spec, Judge):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return CallableJudge(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise JudgeError(f"judge must be 'module:function', 'rm:<model>' or a callable, not {spec!r}.")
    spec = spec.strip()
    if spec.startswith("rm:"):
        return RewardModelJudge(spec[3:])
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise JudgeError(
            f"judge '{spec}' is neither 'module:function' (e.g. hf_dpo.pairs.demo_task:judge) nor 'rm:<reward model>'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise JudgeError(
            f"judge '{spec}': cannot import module '{module_name}': {err}. Is it on PYTHONPATH?"
        ) from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise JudgeError(f"judge '{spec}': module '{module_name}' has no attribute '{attr}'.")
    if not callable(fn):
        raise JudgeError(f"judge '{spec}' is not callable (it is a {type(fn).__name__}).")
    return CallableJudge(fn, name=spec)


# ---------------------------------------------------------------- checked before the model loads


def check_judge_scores(
    spec: str,
    prompt: Prompt,
    completion: str,
    key: str = "key 'judge'",
    tried_on: str = "the first pair's prompt and chosen answer",
) -> None:
    """The judge scores one answer of the run's own data (`prompt`, `completion`; `tried_on` says which, in its
    error) before any model loads: a judge that raises, or returns no finite number (or not the criteria it
    declares), is named now rather than at its first score after training or sampling. A reward model (`rm:`) is
    left to `check_judge` (scoring would load its weights). After `check_judge`."""
    if str(spec).strip().startswith("rm:"):
        return
    try:
        criteria_scores(load_judge(spec), [prompt], [completion])
    except JudgeError as err:
        problem = str(err).replace(RERUN_KEEPS_SAMPLES, "and run again (nothing has been trained yet).")
        raise JudgeError(f"{key}, tried on {tried_on}: {problem}") from None


def check_judge(spec: str, key: str = "key 'judge'") -> None:
    """Import a `module:function` judge; for `rm:<path>`, the path must exist when it is a local one, and its
    config must load (a directory that holds no model, a Hub id mistyped or out of reach). An empty or blank
    spec is refused: the report and the labelling would fail on it at their first score. `key`: where the spec
    was given, as the error names it (the recipe's key, or `hf-dpo eval --judge`)."""
    if not str(spec).strip():
        raise JudgeError(
            f"{key} is empty ({quoted(spec)}): give 'module:function' (a Python function (prompt, completion) "
            "-> float) or 'rm:<reward model>'. For no judge, leave it unset (`judge: null` in a recipe, "
            "`--judge null` on the `hf-dpo train` and `hf-dpo sample` command line)."
        )
    spec = str(spec).strip()
    if spec.startswith("rm:"):
        target = spec[3:].strip()
        if not target:
            raise JudgeError(
                f"judge '{spec}': give the reward model after 'rm:' (a Hub id or a local directory)."
            )
        if target.startswith(("/", "./", "../", "~")) and not Path(target).expanduser().exists():
            raise JudgeError(f"judge '{spec}': {target} does not exist.")
        from transformers import AutoConfig

        location = reward_model_location(target)
        try:  # its config alone (no weights), as the judge reads it: it loads only after training, in the report
            try:  # the Hub cache (or the directory) first: offline, the Hub's retries take ~30 s
                config = AutoConfig.from_pretrained(location, local_files_only=True)
            except (OSError, ValueError):
                config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
            raise JudgeError(
                f"judge '{spec}': cannot be loaded ({reason}). Give a reward model's local directory or a Hub id "
                "reachable from here (or already in the Hub cache)."
            ) from None
        check_reward_model_config(config, spec)  # as RewardModelJudge will, now rather than after training
        return
    judge = load_judge(spec)
    fn = getattr(judge, "fn", None)
    if fn is not None:
        import inspect

        try:
            inspect.signature(fn).bind("prompt", "completion")
        except TypeError as err:
            raise JudgeError(
                f"judge '{spec}' cannot be called as {spec.split(':')[-1]}(prompt, completion) ({err}). A judge "
                "takes the prompt and one completion and returns a score."
            ) from None
        except ValueError:  # a builtin without a signature: it is called, and checked, at the first score
            pass
