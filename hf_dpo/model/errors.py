"""`ModelLoadError`: a model, adapter or tokenizer that could not be loaded."""

from hf_dpo.errors import HfDpoError


class ModelLoadError(HfDpoError, RuntimeError):
    """The model could not be loaded; the message says which and what to do."""
