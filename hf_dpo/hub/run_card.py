"""The card in the run dir (README.md): refreshed while it is the one hf_dpo wrote, kept when edited by hand.

hf_dpo records the sha256 of the README.md it writes in `.hf_dpo_card.sha256`; a README.md with another hash
(and not PEFT's placeholder) is someone's own text and is never overwritten, by a push or by `save_model`.
The card itself is rendered by `hub.card`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from hf_dpo.hub.card import write_card
from hf_dpo.hub.errors import PushError
from hf_dpo.hub.settings import is_main_process

logger = logging.getLogger(__name__)

CARD_RECORD = ".hf_dpo_card.sha256"  # sha256 of the README.md hf_dpo last wrote into the run dir
# PEFT's save_pretrained writes a placeholder card; it is replaced like one of ours.
PEFT_CARD_MARKERS = ("<!-- Provide a quick summary of what the model is/does. -->", "- PEFT ")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def card_was_edited(run_dir: Path) -> bool:
    """Whether README.md is someone's own text: neither the card hf_dpo last wrote nor PEFT's placeholder."""
    readme = run_dir / "README.md"
    if not readme.is_file():
        return False
    data = readme.read_bytes()
    record = run_dir / CARD_RECORD
    if record.is_file() and record.read_text().strip() == _sha256(data):
        return False
    text = data.decode("utf-8", errors="replace")
    return not all(marker in text for marker in PEFT_CARD_MARKERS)


@contextlib.contextmanager
def card_kept(run_dir: str | Path):
    """Around `save_model`: PEFT's save_pretrained writes its placeholder README.md, or updates an existing one's
    metadata (with a local base path). A hand-edited card comes back byte for byte; hf_dpo's own card (or none)
    is removed, so `refresh_card` writes a fresh one for the new adapter."""
    if not is_main_process():  # only the main process saves (and writes the card)
        yield
        return
    readme = Path(run_dir) / "README.md"
    edited = card_was_edited(Path(run_dir))
    saved = readme.read_bytes() if edited else None
    try:
        yield
    finally:
        if saved is not None:
            readme.write_bytes(saved)
        elif readme.is_file():
            readme.unlink()


def check_card_metadata(readme: Path) -> None:
    """PushError naming README.md when its YAML metadata does not parse as a Hub model card's (the Hub refuses
    such a commit, after the upload): only a hand-edited card can get here, hf_dpo's own is rendered valid."""
    import yaml
    from huggingface_hub import ModelCard

    try:
        ModelCard.load(readme)
    except (ValueError, yaml.YAMLError) as err:
        first = " ".join(str(err).split())[:300]
        raise PushError(
            f"{readme} was edited by hand and its metadata (the YAML between the leading '---' lines) is not a "
            f"valid model card's: {first}. Fix that block, or delete {readme.name} to get hf_dpo's card, and push "
            "again.",
            "invalid",
        ) from None


def refresh_card(run_dir: str | Path, repo_id: str | None = None, license: str | None = None) -> Path:
    """(Re)write README.md from the run's files unless it was edited by hand; returns its path.

    A hand-edited card is kept (and pushed) as it is, with a warning; delete it to get a fresh one."""
    run_dir = Path(run_dir)
    readme = run_dir / "README.md"
    if card_was_edited(run_dir):
        logger.warning(
            "%s was edited by hand: keeping it as it is (not regenerated). Delete it to get a fresh card.",
            readme,
        )
        check_card_metadata(readme)
        return readme
    try:
        path = write_card(run_dir, repo_id, license)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise PushError(
            f"{run_dir / 'run_info.json'} or {run_dir / 'eval_report.json'} lacks what the model card needs "
            f"({type(err).__name__}: {err}). Re-run `hf-dpo eval {run_dir}`, or `hf-dpo train` into it "
            "(overwrite_output_dir: true).",
            "invalid",
        ) from None
    (run_dir / CARD_RECORD).write_text(_sha256(path.read_bytes()) + "\n")
    return path
