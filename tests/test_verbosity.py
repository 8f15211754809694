"""Library noise: off by default, and kept off after a library resets its loggers on import."""

from __future__ import annotations

import logging

from learn2pd import verbosity


def test_requiet_undoes_a_library_resetting_its_logger_only_when_quieted(monkeypatch):
    lightning = logging.getLogger("lightning.pytorch")
    monkeypatch.setattr(lightning, "level", lightning.level)
    monkeypatch.setattr(verbosity, "_quiet", False)
    lightning.setLevel(logging.INFO)
    verbosity.requiet()  # never quieted (--verbose): left as the library set it
    assert lightning.level == logging.INFO
    monkeypatch.setenv("LEARN2PD_VERBOSE", "")
    assert verbosity.quiet_libraries() is False
    lightning.setLevel(logging.INFO)  # what `import lightning` does after the command quieted the libraries
    verbosity.requiet()
    assert lightning.level == logging.ERROR


def test_every_trainer_is_built_quiet(monkeypatch):
    lightning = logging.getLogger("lightning.pytorch")
    monkeypatch.setattr(lightning, "level", lightning.level)
    monkeypatch.setattr(verbosity, "_quiet", True)  # as after quiet_libraries
    lightning.setLevel(logging.INFO)  # what `import lightning` does
    trainer = verbosity.lightning_trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    assert trainer.max_epochs == 1 and lightning.level == logging.ERROR
