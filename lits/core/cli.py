"""What the entry points share: the schema registered with Hydra, and user errors as one line and exit code 2.

Errors a user can cause end with one `error: ...` line on stderr: a LitsError or a missing required value from the
task, and (`prepare_hydra`) a bad override or config that Hydra refuses while composing, which Hydra itself would
print over several lines with a hint about stack traces. `CheckFirst` (a Hydra callback, configs/hydra/default.yaml)
validates the composed config against the schema and checks that the run folder can be created before Hydra creates
it, so a bad value or an unwritable place leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import logging
import os
import re
import shutil
import signal
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import open_dict, read_write
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lits.core.config.store import TASK_SCHEMAS, register
from lits.core.config.typed import dataclass_in, typed
from lits.core.errors import LitsError, Stopped
from lits.core.files import STORAGE_ERRNOS, check_writable_folder, hold_folder_lock, write_bytes_atomic, write_error

_DETAIL_PREFIXES = (
    "full_key:",
    "reference_type",
    "object_type",
    "Set the environment variable HYDRA_FULL_ERROR",
    "To append to your config use",
)  # the last: Hydra's hint for new keys, misleading for a typo


def one_line(exc: BaseException, task: str | None = None) -> str:
    """An exception and its cause as one line: their messages' lines joined, Hydra's bookkeeping lines dropped; an
    unknown config option lists the options, an unknown key names the closest one of `task`'s schema."""
    text = "\n".join(str(err) for err in (exc, exc.__cause__) if err is not None)
    missing_option = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing_option:
        return _unknown_option(*missing_option.groups(), text)
    parts = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(_DETAIL_PREFIXES) and line not in parts:
            parts.append(line.rstrip("."))
    if any(" not in '" in part or "not in struct" in part for part in parts):
        unknown = re.search(r"(?:Could not override|Could not append to config\. An item is already at|Key) '([\w.]+)'",
                            text)  # fmt: skip
        close = did_you_mean(unknown.group(1), schema_keys(task)) if unknown and task else None
        parts.append(f"did you mean {close}?" if close else "check the name: --cfg job prints every key")
    return "; ".join(parts)


def _unknown_option(group: str, option: str, text: str) -> str:
    """'experiment=progresive: no such experiment; choose one of ... (did you mean progressive?)'."""
    listed = text.partition(f"Available options in '{group}':")[2].partition("Config search path")[0]
    options = [o.strip() for o in listed.split() if o.strip()]
    close = difflib.get_close_matches(option, options, n=1)
    return (
        f"{group}={option}: no such {group.rsplit('/', 1)[-1]} in configs/{group}/; choose one of {', '.join(options)}"
        + (f" (did you mean {close[0]}?)" if close else "")
    )


def schema_keys(task: str | None) -> list[str]:
    """Every dotted key of a task's schema (train, evaluate, predict, export)."""
    schema = TASK_SCHEMAS.get(f"{task}_schema")
    if schema is None:
        return []
    keys: list[str] = []

    def walk(node: type, prefix: str) -> None:
        hints = typing.get_type_hints(node)
        for f in dataclasses.fields(node):
            keys.append(prefix + f.name)
            nested = dataclass_in(hints[f.name])
            if nested is not None:
                walk(nested, f"{prefix}{f.name}.")

    walk(schema, "")
    return keys


def did_you_mean(key: str, keys: list[str]) -> str | None:
    """The schema key closest to a mistyped one: by the whole dotted key, a key of the same section that begins with
    it or that it begins with (data.crop -> data.crop_size), else by its last part (max_epochs ->
    trainer.max_epochs)."""
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    if close:
        return close[0]
    section, _, leaf = key.rpartition(".")
    same_section = [k for k in keys if k.rpartition(".")[0] == section]
    begins = [k for k in same_section if len(leaf) >= 3 and (k.rpartition(".")[2].startswith(leaf) or leaf.startswith(
        k.rpartition(".")[2]))]  # fmt: skip
    if 0 < len(begins) <= 3:
        return " or ".join(begins)
    leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(keys)}
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.8)
    return leaves[close[0]] if close else None


def prepare_hydra() -> None:
    """Register the typed schema and make Hydra's composition errors one line with exit code 2.

    Hydra reports errors through `hydra._internal.utils.run_and_report` (hydra-core 1.3, pinned in pyproject): the
    wrapper lets everything through unchanged except the errors of composing a config from files and overrides.
    """
    register()
    from hydra._internal import utils
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    original = utils.run_and_report
    if getattr(original, "__wrapped_by_lits__", False):
        return
    config_errors = (ConfigCompositionException, MissingConfigException, OverrideParseException, OmegaConfBaseException)

    def run_and_report(func):
        def composition_errors_as_one_line():
            try:
                return func()
            except (*config_errors, AssertionError) as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                if isinstance(exc, AssertionError):  # OmegaConf: an override under a section that is null here
                    if "Unexpected type for root" not in str(exc):
                        raise
                    print(f"error: {_unset_section_line(sys.argv[1:])}", file=sys.stderr)
                    sys.exit(2)
                print(f"error: {one_line(exc, Path(sys.argv[0]).stem)}", file=sys.stderr)
                sys.exit(2)

        return original(composition_errors_as_one_line)

    run_and_report.__wrapped_by_lits__ = True
    utils.run_and_report = run_and_report


# Sections a command leaves null unless selected, and what to do instead of setting their keys.
UNSET_SECTION_HINTS = {
    "data": "with ckpt= the data come from the checkpoint (data_root=DIR if they moved); with predictions= select them "
    "first: data=lits (or msd, csv) data.root=DIR",
}


def _unset_section_line(args: list[str]) -> str:
    """One line for an override such as data.root=DIR on a command where `data` is null (not selected)."""
    for arg in args:
        section = arg.lstrip("+~").partition("=")[0].partition(".")[0]
        if "." in arg.partition("=")[0] and section in UNSET_SECTION_HINTS:
            return f"{arg}: {section} is not selected on this command; {UNSET_SECTION_HINTS[section]}"
    return "an override sets a key under a section that is null here; --cfg job prints every key"


def rename_argument(argv: list[str], key: str, name: str) -> list[str]:
    """Command-line arguments with `key=VALUE` passed as `name=VALUE` (for a task setting whose command-line key is
    also a config group's name, which Hydra would otherwise try to select)."""
    return [f"{name}={arg[len(key) + 1 :]}" if arg.startswith(f"{key}=") else arg for arg in argv]


@dataclass
class _RunFolder:
    """What CheckFirst saw of the run folder before Hydra wrote into it, so that a task refused at start-up leaves it
    as it was: a folder Hydra created is removed, an existing one gets its .hydra/ record back."""

    path: Path | None = None
    fresh: bool = False
    record: dict[str, bytes] = field(default_factory=dict)  # .hydra/ file name -> its bytes before this attempt
    started: bool = False


_RUN_FOLDER = _RunFolder()


def mark_started() -> None:
    """The task is past its start-up checks (training: the run is built; evaluate: the source is open): from here on a
    failure keeps what the run folder holds."""
    _RUN_FOLDER.started = True


def _remember_run_folder(run_dir: Path) -> None:
    record_dir = run_dir / ".hydra"
    record = {p.name: p.read_bytes() for p in record_dir.iterdir() if p.is_file()} if record_dir.is_dir() else {}
    _RUN_FOLDER.path, _RUN_FOLDER.fresh, _RUN_FOLDER.record = run_dir, not run_dir.exists(), record


def _undo_refused_start() -> None:
    """After a refusal before `mark_started`: remove the run folder this process created (only .hydra/, a log and the
    lock are in it), or put back the .hydra/ record Hydra overwrote in an existing one."""
    folder = _RUN_FOLDER.path
    if folder is None or _RUN_FOLDER.started or os.environ.get("RANK", "0") != "0":
        return
    if _RUN_FOLDER.fresh:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name, data in _RUN_FOLDER.record.items():
        write_bytes_atomic(folder / ".hydra" / name, data)


@contextlib.contextmanager
def starting():
    """Around the task's imports in an entry point (torch takes seconds to load): Ctrl-C there ends in one line and
    exit code 130, and the run folder Hydra just created is removed, instead of a KeyboardInterrupt traceback."""
    try:
        yield
    except KeyboardInterrupt:
        _undo_refused_start()
        print("stopped by SIGINT while starting; nothing was run", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def _stop_now(signum, _frame) -> None:
    raise Stopped(signum)


def run_task(task, cfg):
    """Call task(cfg); a LitsError or a missing required value ends the process with one clear line, exit 2.

    SIGTERM / SIGINT stop the task where it is (`Stopped`: finally blocks run, so temporary files go) with one line
    and exit code 128 + signal, not a traceback; the training loop installs its own step-by-step stop meanwhile.
    """
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: Python's defaults stay
            previous[sig] = signal.signal(sig, _stop_now)
    try:
        return task(cfg)
    except LitsError as exc:
        _undo_refused_start()
        print(f"error: {exc}", file=sys.stderr)
    except MissingMandatoryValue as exc:
        _undo_refused_start()
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        print(f"error: {key} is required; set it on the command line, e.g. {key}=...", file=sys.stderr)
    except OSError as exc:  # a write outside atomic_path (a log, history.jsonl) on a full or read-only disk
        if exc.errno not in STORAGE_ERRNOS or not exc.filename:
            raise
        print(f"error: {write_error(exc.filename, exc.strerror)}", file=sys.stderr)
    except Stopped as exc:
        where = f" {exc.note}" if exc.note else ""
        print(f"stopped by {signal.Signals(exc.signum).name}{where}; finished work is kept, rerun to continue",
              file=sys.stderr)  # fmt: skip
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(2)


class CheckFirst(Callback):
    """Before Hydra creates the run folder (on_run_start): the composed config must pass the task's schema and the
    run folder must be creatable; else one `error:` line and exit 2, and nothing is written. A training also locks
    its run folder for as long as it runs: a second training into the same folder is refused, naming the first."""

    def on_run_start(self, config, config_name: str | None = None, **kwargs) -> None:
        schema = TASK_SCHEMAS.get(f"{config_name}_schema")
        if schema is None:
            return
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.instance().cfg
        job = copy.deepcopy(config)
        try:
            HydraConfig.instance().set_config(job)  # what hydra.run.dir and ${hydra:...} resolve against
            run_dir = os.path.abspath(str(job.hydra.run.dir))
            with read_write(job.hydra.runtime), open_dict(job.hydra.runtime):  # as Hydra's run_job does
                job.hydra.runtime.output_dir = run_dir
            HydraConfig.instance().set_config(job)
            task = copy.deepcopy(job)
            with read_write(task), open_dict(task):
                del task["hydra"]
            typed(schema, task)
            check_writable_folder(run_dir, "run folder", "pass a writable hydra.run.dir=... or run from another folder")
            _remember_run_folder(Path(run_dir))
            if config_name == "train" and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 holds it for all
                hold_folder_lock(run_dir, "run folder", "wait for it to finish, or choose another hydra.run.dir=...")
        except LitsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Exception:  # anything else (a Hydra detail): the task meets it again and reports it in its own words
            return
        finally:
            HydraConfig.instance().cfg = hydra_cfg


class ConsoleFormatter(logging.Formatter):
    """Console log lines as `HH:MM:SS message`; warnings and errors as `HH:MM:SS WARNING: message` (the run's log file
    keeps the full record: date, logger and level)."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            time_part, _, message = line.partition(" ")
            line = f"{time_part} {record.levelname}: {message}"
        return line


def run_subcommand(package: str, entries: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """`python -m <package> NAME [options]` for the tool folders beside lits (benchmarks/, studies/): `entries` maps
    NAME to (module of `package` with `configure(parser)` and `main(args)`, one line of help). The package's
    docstring is the overview; each module's docstring is its --help."""
    import argparse
    import importlib

    top = argparse.ArgumentParser(
        prog=f"python -m {package}",
        description=importlib.import_module(package).__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, (module_name, summary) in entries.items():
        module = importlib.import_module(f"{package}.{module_name}")
        parser = sub.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.configure(parser)
        parser.set_defaults(main=module.main)
    args = top.parse_args(argv)
    return args.main(args) or 0
