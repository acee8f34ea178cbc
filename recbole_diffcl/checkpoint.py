"""Checkpoints as files: read them safely, check their dataset, find the newest one to resume.

A checkpoint written by the plugin's trainers (``saved/<Model>-<time>.pth``, the best epoch, and
``saved/<Model>-<time>-last.pth``, the latest epoch) holds plain state only: the run's final
configuration as plain values, the model's and the optimiser's state dicts, the training position
and RNG states (:mod:`recbole_diffcl.resume`) and a fingerprint of the dataset it was trained on. It
loads with ``torch.load(..., weights_only=True)``, so nothing here ever unpickles objects.

This module sits in the trainer's layer (the trainers write checkpoints, :mod:`recbole_diffcl.resume`
continues from them); rebuilding a whole run from a checkpoint (its configuration, data and model:
``load_data_and_model``, ``resumed_config``) needs everything below the runner and lives in
:mod:`recbole_diffcl.quick_start`.
"""
from __future__ import annotations

import glob
import hashlib
import os
import pickle
from typing import Any, Optional

import torch

from recbole_diffcl.errors import UserError

#: The latest-epoch checkpoint of ``saved/<Model>-<time>.pth`` is ``saved/<Model>-<time>-last.pth``.
LAST_SUFFIX = "-last.pth"

#: Values RecBole's ``Config`` derives itself (from the model class, the dataset name and the machine);
#: they are recomputed, never copied from the checkpoint.
DERIVED_KEYS = frozenset(
    {
        "model", "dataset", "data_path", "device", "single_spec", "local_rank", "MODEL_TYPE",
        "MODEL_INPUT_TYPE", "eval_type", "valid_neg_sample_args", "test_neg_sample_args",
    }
)

RETRAIN_FIX = "Fix: pass a .pth file written by this plugin's runner (python run_recbole_diffcl.py) into saved/."


def read_checkpoint(path: str, metadata_only: bool = False) -> dict[str, Any]:
    """The checkpoint in ``path``, loaded safely on the CPU; a :class:`UserError` when it is not one.

    ``metadata_only`` maps the file instead of reading it (the tensors are read only when touched).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(
            f"Checkpoint '{path}' does not exist. Fix: check the path; training writes checkpoints into "
            f"checkpoint_dir (saved/ by default) and a --result_file names the best one."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=metadata_only or None)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # no refused object: not a pickle of a checkpoint at all
            raise UserError(f"'{path}' is not a torch checkpoint (UnpicklingError). {RETRAIN_FIX}") from None
        # torch's message is long; its "WeightsUnpickler error: ..." line names the refused object
        lines = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line]
        reason = lines[0].split("error:", 1)[1].split(" was not")[0].strip() if lines else "not plain state"
        raise UserError(
            f"'{path}' holds Python objects that torch's safe loader refuses ({reason}): it is not a "
            f"recbole_diffcl checkpoint (RecBole's own trainer pickles its whole Config into its checkpoints). "
            f"{RETRAIN_FIX}"
        ) from None
    except Exception as exc:  # torch's readers raise many kinds (KeyError, EOFError, RuntimeError ...) on junk
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}" if str(exc).strip() else type(exc).__name__
        raise UserError(f"'{path}' is not a torch checkpoint ({reason}). {RETRAIN_FIX}") from None
    stored = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict) or "state_dict" not in checkpoint or not {"model", "dataset"} <= set(stored):
        raise UserError(
            f"'{path}' is a torch file but not a recbole_diffcl checkpoint (it lacks the run's config or the "
            f"model's state_dict). {RETRAIN_FIX}"
        )
    return checkpoint


def _sha1(tokens) -> str:
    return hashlib.sha1("\n".join(str(t) for t in tokens).encode("utf-8")).hexdigest()


def dataset_fingerprint(dataset) -> dict[str, Any]:
    """What identifies the data a model was trained on: name, sizes and hashes of the token lists.

    Item and user ids are positions in these token lists, so two datasets with equal fingerprints map
    every token to the same id (and the model's item embeddings mean the same items).
    """
    return {
        "dataset": str(dataset.dataset_name),
        "n_users": int(dataset.user_num),
        "n_items": int(dataset.item_num),
        "users_sha1": _sha1(dataset.field2id_token[dataset.uid_field]),
        "items_sha1": _sha1(dataset.field2id_token[dataset.iid_field]),
    }


def check_fingerprint(checkpoint: dict, dataset, path: str) -> None:
    """A :class:`UserError` when ``dataset`` is not the data the checkpoint was trained on."""
    trained = checkpoint.get("dataset_fingerprint")
    if not trained:
        return  # an older checkpoint: loading the state dict still checks the sizes
    now = dataset_fingerprint(dataset)
    if now == trained:
        return
    raise UserError(
        f"Checkpoint '{path}' was trained on dataset '{trained['dataset']}' with {trained['n_users']} users and "
        f"{trained['n_items']} items, but the files at {dataset.config['data_path']} give {now['n_users']} users "
        f"and {now['n_items']} items"
        + (" (same counts, other tokens)" if (now["n_users"], now["n_items"]) == (trained["n_users"], trained["n_items"]) else "")
        + ": it is a checkpoint of a different dataset. Fix: point data_path at the atomic files the model was "
        f"trained on (load_data_and_model(path, {{'data_path': DIR}}) or --data_path=DIR, DIR holding "
        f"{trained['dataset']}/), with the filtering properties of that run."
    )


def find_latest_checkpoint(checkpoint_dir: str, model: str, dataset: str) -> Optional[str]:
    """The newest resumable checkpoint of ``model`` on ``dataset`` in ``checkpoint_dir`` (None if there is none).

    Resumable: written with the training state (``rng_state``). Files that are not checkpoints are skipped.
    """
    found = []
    for path in glob.glob(os.path.join(glob.escape(str(checkpoint_dir)), "*.pth")):
        try:
            checkpoint = read_checkpoint(path, metadata_only=True)
        except UserError:
            continue
        stored = checkpoint["config"]
        if stored["model"] == model and stored["dataset"] == dataset and "rng_state" in checkpoint:
            found.append((os.path.getmtime(path), path.endswith(LAST_SUFFIX), path))
    return max(found)[2] if found else None




def last_checkpoint_path(best_file: str) -> str:
    """Where the latest-epoch checkpoint of the run whose best checkpoint is ``best_file`` goes."""
    if best_file.endswith(LAST_SUFFIX):
        return best_file
    root, _ = os.path.splitext(best_file)
    return root + LAST_SUFFIX
