"""What a resume reads back besides Keras' backup: the epoch the backup holds, and the best epochs' weights."""

import json
import shutil
from pathlib import Path

from cnnlab.rundir.files import BACKUP_DIR, copy_file
from cnnlab.runtime.keras_compat import BACKUP_METADATA, BACKUP_WEIGHTS


def backup_epoch(run_dir):
    """Completed epochs held by the run's BackupAndRestore state; 0 when it has none (killed in epoch 1).

    Keras saves an epoch in four steps, in place: the weights, then the metadata, are
    copied to `.bkp` (double_checkpoint), then the new weights and the new metadata are
    written. A kill or Ctrl-C inside the last two can leave the newest metadata cut off,
    or the newest weights cut off beside metadata that still names the epoch before, the
    epoch the `.bkp` pair already holds whole. Either way this puts that `.bkp` pair in
    place where Keras will look for it.
    """
    backup = Path(run_dir) / BACKUP_DIR
    latest = backup / BACKUP_METADATA
    previous = backup / f"{BACKUP_METADATA}.bkp"
    weights = backup / BACKUP_WEIGHTS
    epoch = read_backup_metadata(latest)
    if epoch is not None:
        if epoch == read_backup_metadata(previous) and Path(f"{weights}.bkp").is_file():
            copy_file(Path(f"{weights}.bkp"), weights)  # stopped while writing this epoch's successor's weights
        return epoch
    epoch = read_backup_metadata(previous)
    if epoch is None:
        shutil.rmtree(backup, ignore_errors=True)  # nothing usable: start the run's epochs again
        return 0
    copy_file(Path(f"{weights}.bkp"), weights)
    copy_file(previous, latest)
    return epoch


def read_backup_metadata(path):
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def best_weights_path(folder, epoch):
    return Path(folder) / f"epoch-{epoch}.weights.h5"


def remove_best_weights_before(folder, epoch):
    """Deletes the saved best weights of epochs before `epoch` (1-based): a later best has replaced them."""
    for path in Path(folder).glob("epoch-*.weights.h5"):
        number = path.name.removeprefix("epoch-").removesuffix(".weights.h5")
        if number.isdigit() and int(number) < epoch:
            path.unlink(missing_ok=True)
