"""Reading preference data: a local file (.json/.jsonl/.parquet/.csv), a directory of them found by split as
`datasets` finds them (split names, Hub shard names, `data/`, split folders), a directory written by
`save_to_disk`, or a Hub dataset, into `{split: (source, rows)}`."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from hf_dpo.config import DataConfig, RecipeError
from hf_dpo.data.errors import DataError
from hf_dpo.errors import quoted
from hf_dpo.files import read_jsonl, read_utf8_text

if TYPE_CHECKING:  # Recipe imports transformers; a command reads its data before that (RecipeSections)
    from hf_dpo.config import Recipe
    from hf_dpo.config.early import RecipeSections

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in read_jsonl(path, error=DataError)]


def _check_row_objects(path: Path, rows: list) -> list[dict]:
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, row {index}: expected an object with prompt/chosen/rejected keys, got "
                f"{type(row).__name__} {row!r:.60}. A .json file holds a list of such objects."
            )
    return rows


def _read_file(path: Path) -> list[dict]:
    """The rows of one data file; DataError naming the file for one that cannot be opened or parsed."""
    try:
        return _read_rows(path)
    except OSError as err:  # a directory named train.jsonl, a dangling symlink, no permission
        raise DataError(f"{path}: cannot be read ({err.strerror or err}).") from None


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        text = read_utf8_text(path, error=DataError)
        try:
            data = json.loads(text)
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply to read.") from None
        except json.JSONDecodeError as err:
            # Some ".json" files are really JSON lines.
            try:
                return _read_jsonl(path)
            except DataError:
                raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}).") from None
        if isinstance(data, dict):  # {"data": [...]} or column-oriented {"prompt": [...], ...}
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(data) == 1 and lists:
                data = lists[0]
            elif lists and len(lists) == len(data):
                lengths = {key: len(value) for key, value in data.items()}
                if len(set(lengths.values())) > 1:  # zip would silently cut every column to the shortest
                    counts = ", ".join(f"{key}: {n}" for key, n in lengths.items())
                    raise DataError(
                        f"{path}: its columns have different lengths ({counts}); a column-oriented .json needs "
                        "one value per row in every column."
                    )
                data = [dict(zip(data, values)) for values in zip(*data.values())]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of rows (objects), got {type(data).__name__}.")
        return _check_row_objects(path, data)
    if suffix in (".parquet", ".csv"):
        import datasets

        try:
            if suffix == ".csv":
                return read_csv_text(path)
            ds = datasets.load_dataset(LOCAL_FORMATS[suffix], data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - any parse failure becomes one clear message
            # datasets wraps the parser's own error in "An error occurred ..."
            while err.__cause__ is not None:
                err = err.__cause__
            reason = " ".join(str(err).split())  # pandas' messages span lines; the error is one line
            raise DataError(
                f"{path}: could not be read as {suffix[1:]} ({type(err).__name__}: {reason})."
            ) from None
        return ds.to_list()
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .json, .jsonl, .parquet or .csv.")


def read_csv_text(path: Path) -> list[dict]:
    """Every cell as the text it holds. CSV has no types: pandas' guessing (datasets' CSV loader) read a column of
    numeric answers as numbers, "1.50" as 1.5, and the answers NA, None or null as missing values."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return frame.to_dict(orient="records")


# datasets' SPLIT_PATTERN_SHARDED, `{split}-00000-of-00002.parquet`: the name a Hub dataset's shards carry
SHARD_SUFFIX = re.compile(r"-[0-9]{5}-of-[0-9]{5}$")


def split_files(directory: Path, config_name: str | None = None) -> dict[str, list[Path]]:
    """{split: its files, in shard order} of a local directory, read as `datasets.load_dataset(directory)` reads the
    Hub's layouts: the splits its README.md's `configs:` names (the dataset card's YAML; `config_name`, else the
    card's default config); failing that, files named by split (`train.jsonl`, `test_prefs.parquet`) or by split
    and shard (`train_prefs-00000-of-00001.parquet`), at the top or in `data/`; failing those, `datasets`' own
    inference (split folders such as `train/`, keywords in names), through `datasets.data_files`."""
    files = _files_named_by_card(directory, config_name)
    if files:
        _warn_of_files_the_card_leaves_out(directory, files)
    files = files or _files_named_by_split(directory) or _files_inferred_by_datasets(directory)
    if not files:
        raise DataError(
            f"{directory}: no .json/.jsonl/.parquet/.csv files (name them by split, e.g. train.jsonl, or as the Hub "
            "does, data/train-00000-of-00001.parquet)."
        )
    return files


def card_configs(directory: Path) -> list | None:
    """The `configs:` of a directory's README.md YAML header (the Hub's dataset card), or None."""
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    header = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not header:
        return None
    try:
        meta = yaml.safe_load(header.group(1))
    except yaml.YAMLError as err:
        raise DataError(f"{readme}: its YAML header cannot be read ({' '.join(str(err).split())}).") from None
    return meta.get("configs") if isinstance(meta, dict) else None


def _files_named_by_card(directory: Path, config_name: str | None) -> dict[str, list[Path]]:
    """{split: files} of the card's config, as `datasets` reads it (`MetadataConfigs`: the named config, else the
    one called default, marked `default: true` or the only one; `sanitize_patterns`: a path or list is the train
    split). Plain paths are looked up here; globs go through `datasets.data_files`, which resolves them as
    `load_dataset` does."""
    configs = card_configs(directory)
    if not configs:
        return {}
    readme = directory / "README.md"
    if not isinstance(configs, list) or not all(isinstance(c, dict) and "config_name" in c for c in configs):
        raise DataError(
            f"{readme}: `configs` is not a list of entries with a config_name, as the Hub reads it."
        )
    by_name = {str(c["config_name"]): c for c in configs}
    defaults = [n for n, c in by_name.items() if len(by_name) == 1 or n == "default" or c.get("default")]
    name = config_name or (defaults[0] if len(defaults) == 1 else None)
    if name not in by_name:
        raise DataError(
            f"{readme}: {'no config ' + quoted(name) if name else 'no default config'} among its configs "
            f"({', '.join(by_name)}). Set dataset_config to one of them."
        )
    config = by_name[name]
    base = directory / str(config.get("data_dir") or "")
    data_files = config.get("data_files")
    if data_files is None:
        return _files_inferred_by_datasets(base)
    if isinstance(data_files, str):
        data_files = [data_files]
    if isinstance(data_files, list) and data_files and all(isinstance(p, dict) for p in data_files):
        patterns = {str(p.get("split")): p.get("path") for p in data_files}
    else:
        patterns = {"train": data_files}  # datasets' SANITIZED_DEFAULT_SPLIT
    patterns = {split: paths if isinstance(paths, list) else [paths] for split, paths in patterns.items()}
    if not all(isinstance(p, str) for paths in patterns.values() for p in paths):
        raise DataError(
            f"{readme}: config {quoted(name)}: data_files is not a path, a list of paths or a list of "
            "{split, path} entries, as the Hub reads it."
        )
    if any(set("*?[") & set(p) for paths in patterns.values() for p in paths):
        return _card_globs(base, readme, name, patterns)
    files = {}
    for split, paths in patterns.items():
        files[split] = [base / p for p in paths]
        missing = [str(p) for p in paths if not (base / p).is_file()]
        if missing:
            raise DataError(
                f"{readme}: config {quoted(name)} names {', '.join(missing)} for split {quoted(split)}, and "
                f"{base} has no such file."
            )
    return files


def _warn_of_files_the_card_leaves_out(directory: Path, files: dict[str, list[Path]]) -> None:
    """A test.jsonl put beside a card whose `configs:` name only train.jsonl is not read (nor by `datasets`): say
    so, rather than train without the held-out split the user meant to give."""
    named = {path.resolve() for paths in files.values() for path in paths}
    left_out = [path for path in _top_data_files(directory) if path.resolve() not in named]
    if left_out:
        logger.warning(
            "%s: not read, as README.md's `configs:` do not name them (datasets reads the card the same way): %s. "
            "Add them to the card's data_files, or remove the card's `configs:` to find files by split name.",
            directory,
            ", ".join(str(p.relative_to(directory)) for p in left_out),
        )


def _card_globs(base: Path, readme: Path, name: str, patterns: dict[str, list[str]]) -> dict[str, list[Path]]:
    from datasets.data_files import DataFilesDict

    try:
        resolved = DataFilesDict.from_patterns(patterns, base_path=str(base))
    except FileNotFoundError as err:
        raise DataError(
            f"{readme}: config {quoted(name)}: {' '.join(str(err).split())} (its data_files, from {base})."
        ) from None
    return {str(split): [Path(f) for f in names] for split, names in resolved.items()}


def _top_data_files(directory: Path) -> list[Path]:
    """The data files at the top of `directory` and in its `data/`, in name order: where files named by split are
    looked for."""
    return [
        path
        for folder in (directory, directory / "data")
        if folder.is_dir()
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in LOCAL_FORMATS
    ]


def _files_named_by_split(directory: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for path in _top_data_files(directory):
        split = SHARD_SUFFIX.sub("", path.stem)
        others = files.setdefault(split, [])
        if others and (others[0].parent != path.parent or SHARD_SUFFIX.search(others[0].stem) is None):
            # train.json and train.jsonl, or train.jsonl and data/train-00000-of-00001.parquet: reading one would
            # silently ignore the other, reading both could count pairs twice
            raise DataError(
                f"{directory}: two files for split '{split}' ({others[0].relative_to(directory)} and "
                f"{path.relative_to(directory)}). Keep one of them in the directory."
            )
        others.append(path)
    return files


def _files_inferred_by_datasets(directory: Path) -> dict[str, list[Path]]:
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        patterns = get_data_patterns(str(directory))
    except EmptyDatasetError:
        return {}
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(directory))
    found = {
        str(split): [Path(f) for f in names if Path(f).suffix.lower() in LOCAL_FORMATS]
        for split, names in resolved.items()
    }
    return {split: paths for split, paths in found.items() if paths}


def _read_split_files(directory: Path, paths: list[Path]) -> tuple[str, list[dict]]:
    """(source name, rows) of one split's files, shards concatenated in order; one file is named as itself."""
    if len(paths) == 1:
        return str(paths[0]), _read_file(paths[0])
    rows = [row for path in paths for row in _read_file(path)]
    names = ", ".join(str(p.relative_to(directory)) for p in paths)
    return f"{directory} ({len(paths)} files: {names})", rows


def _named_test_split(cfg: DataConfig) -> bool:
    """Whether the recipe named its held-out split: one the data lacks is then an error, where an absent default
    split ('test') means none (eval_fraction may carve one out). Otherwise the run silently had no held-out split."""
    default = DataConfig.__dataclass_fields__["dataset_test_split"].default
    return bool(cfg.dataset_test_split) and cfg.dataset_test_split != default


def check_named_splits(cfg: DataConfig, available, missing: str, listed: str = "found") -> None:
    """Each split the recipe names (dataset_train_split; dataset_test_split when named) is among `available`, or a
    DataError says which key names it and what there is. `missing` opens the message ("PATH: no file for split")."""
    named = [("dataset_train_split", cfg.dataset_train_split)]
    if _named_test_split(cfg):
        named.append(("dataset_test_split", cfg.dataset_test_split))
    for key, split in named:
        if split not in available:
            raise DataError(
                f"{missing} {quoted(split)} ({key}; {listed}: {', '.join(available)}). Set {key} to one of them."
            )


def read_splits(cfg: DataConfig) -> dict[str, tuple[str, list[dict]]]:
    """{split: (source name, rows)} for the train split and, if present, the test split."""
    if not cfg.dataset_name:
        raise DataError("The recipe sets no dataset_name: give a Hub dataset id or a local file/directory.")
    if cfg.dataset_test_split and cfg.dataset_test_split == cfg.dataset_train_split:
        # the "held-out" numbers before and after training would be measured on the pairs trained on
        raise DataError(
            f"dataset_test_split '{cfg.dataset_test_split}' is the train split (dataset_train_split): nothing would "
            "be held out. Name another split, set eval_fraction (e.g. 0.1) to hold out a share of the train split, "
            "or dataset_test_split: null for none."
        )
    path = Path(cfg.dataset_name).expanduser()
    wanted = [cfg.dataset_train_split] + ([cfg.dataset_test_split] if cfg.dataset_test_split else [])
    out: dict[str, tuple[str, list[dict]]] = {}
    if path.is_file():
        if _named_test_split(cfg):
            raise DataError(
                f"{path} is one file, the train split: it has no split dataset_test_split "
                f"'{cfg.dataset_test_split}'. Put the splits in one directory (train.jsonl, "
                f"{cfg.dataset_test_split}.jsonl), set eval_fraction to hold out a share of this file, or "
                "dataset_test_split: null for no held-out split."
            )
        out[cfg.dataset_train_split] = (str(path), _read_file(path))
        return out
    if path.is_dir() and _saved_with_save_to_disk(path):
        return _read_saved(path, cfg, wanted)
    if path.is_dir():
        files = split_files(path, cfg.dataset_config)
        check_named_splits(cfg, files, f"{path}: no file for split")
        for split in wanted:
            if split in files:
                out[split] = _read_split_files(path, files[split])
        return out
    if path.suffix.lower() in LOCAL_FORMATS or str(cfg.dataset_name).startswith((".", "/", "~")):
        raise DataError(f"Dataset file {path} does not exist.")
    return _read_hub(cfg, wanted)


def _saved_with_save_to_disk(path: Path) -> bool:
    """A `datasets` save_to_disk directory: its .json files are metadata, not splits of rows."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _read_saved(path: Path, cfg: DataConfig, wanted: list[str]) -> dict[str, tuple[str, list[dict]]]:
    """The splits of a save_to_disk directory: a DatasetDict's by name, a single Dataset as the train split."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - a directory saved by another datasets version, cut short, ...
        reason = " ".join(str(err).split())
        raise DataError(
            f"{path}: could not be read with datasets.load_from_disk ({type(err).__name__}: {reason})."
        ) from None
    if isinstance(saved, datasets.Dataset):
        if _named_test_split(cfg):
            raise DataError(
                f"{path} is one saved Dataset, the train split: it has no split dataset_test_split "
                f"'{cfg.dataset_test_split}'. Save a DatasetDict, set eval_fraction to hold out a share of it, or "
                "dataset_test_split: null for none."
            )
        return {cfg.dataset_train_split: (str(path), saved.to_list())}
    check_named_splits(cfg, saved, f"{path}: no split", listed="splits")
    return {split: (f"{path}[{split}]", saved[split].to_list()) for split in wanted if split in saved}


def _read_hub(cfg: DataConfig, wanted: list[str]) -> dict[str, tuple[str, list[dict]]]:
    import datasets

    try:
        available = datasets.get_dataset_split_names(cfg.dataset_name, cfg.dataset_config)
    except Exception as err:  # noqa: BLE001
        raise DataError(
            f"Could not reach dataset '{cfg.dataset_name}' on the Hub ({type(err).__name__}: {err}). "
            "Check the id and your network, or point dataset_name at a local file or directory."
        ) from None
    check_named_splits(cfg, available, f"Dataset '{cfg.dataset_name}' has no split", listed="splits")
    out = {}
    for split in wanted:
        if split not in available:  # the default test split, absent: no held-out split
            continue
        try:
            ds = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config, split=split)
        except Exception as err:  # noqa: BLE001 - a dropped network, a file datasets cannot cast: name the split
            while err.__cause__ is not None:  # datasets wraps the reason in "An error occurred ..."
                err = err.__cause__
            reason = " ".join(str(err).split())
            raise DataError(
                f"Dataset '{cfg.dataset_name}', split {quoted(split)}, could not be loaded ({type(err).__name__}: "
                f"{reason}). Check your network, or download it once and point dataset_name at the local files."
            ) from None
        out[split] = (f"{cfg.dataset_name}[{split}]", ds.to_list())
    return out


def read_data(recipe: Recipe | RecipeSections) -> dict[str, tuple[str, list[dict]]]:
    """Every split's rows ({split: (source, rows)}, as `hf_dpo.data.read_splits`), read errors made DataError.
    Only `recipe.data` is read: the sections `hf_dpo.config.early` checks before transformers is imported do."""
    cfg = recipe.data
    try:
        return read_splits(cfg)
    except (DataError, RecipeError):
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"{cfg.dataset_name}: not UTF-8 text ({err}). Save the data as UTF-8.") from None
    except OSError as err:
        raise DataError(f"{cfg.dataset_name}: cannot be read ({err.strerror or err}).") from None
