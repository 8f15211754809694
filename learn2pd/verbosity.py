"""What the libraries print: off by default, back with `--verbose` (or LEARN2PD_VERBOSE=1).

transformers' `Loading weights` bar, datasets' progress bars, Lightning's tips, model summaries and
deprecation warnings, W&B's banner and summary and lm-eval's per-kwarg warnings say nothing a user of a
command acts on; learn2pd's own progress bars and results are not affected.
"""

from __future__ import annotations

import logging
import os
import warnings

_quiet = False  # set by quiet_libraries: `requiet` applies it again after a library resets its loggers
LOGGERS = ("transformers", "datasets", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
           "lm-eval", "lm_eval", "wandb", "huggingface_hub", "torch.distributed")


def quiet_libraries(verbose: bool = False) -> bool:
    """Silence library chatter unless `verbose` (or LEARN2PD_VERBOSE=1); returns whether verbose."""
    verbose = verbose or os.environ.get("LEARN2PD_VERBOSE", "") not in ("", "0")
    if verbose:
        return True
    global _quiet
    _quiet = True
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    try:  # the weight-loading bar is transformers' own tqdm, switched off through its API
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return False


def requiet() -> None:
    """After quiet_libraries, quiet the loggers again: Lightning sets its own to INFO when first imported (the
    trainers import it lazily, after the command quieted the libraries), which let its tips print."""
    if _quiet:
        for name in LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def lightning_trainer(**kwargs):
    """A Lightning Trainer whose tips and device lines stay off when the libraries were quieted: the loggers
    Lightning reset to INFO on import are set back first (every trainer of the project is built here)."""
    import lightning as L

    requiet()
    return L.Trainer(**kwargs)


def quiet_argv(argv: list[str]) -> list[str]:
    """For the config-file commands: consume `--verbose`, quiet the libraries unless it was given."""
    quiet_libraries("--verbose" in argv)
    return [a for a in argv if a != "--verbose"]
