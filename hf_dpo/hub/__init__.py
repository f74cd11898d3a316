"""The Hub: the model card (`card`) and one-commit pushes of a run dir (`push`)."""
