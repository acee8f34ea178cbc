"""What a trained DiffCLRec's views look like: ``python -m recbole_diffcl.views --checkpoint PATH``.

For a few users (``--users`` tokens as in the atomic files, else the first ``--n`` users) it prints the
training sequence the model sees, the positions chosen for replacement, the denoiser's top-k
candidates there with their scores, and the two sampled views, all as item tokens; ``--csv`` (default
beside the checkpoint, ``<checkpoint>.views.csv``) gets the same, one line per user and position. Then it
computes the per-epoch view statistics (see ``DiffCLRec.record_view_statistics``) over the whole
training set, once, with dropout off.

The model is rebuilt from the checkpoint's own configuration (not from today's property files) and the
dataset from its atomic files (``--data_path`` if they moved).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any, Optional

import torch

from recbole_diffcl.errors import UserError, exit_code_of

CSV_COLUMNS = ["user_id", "position", "item", "chosen", "candidates", "candidate_scores", "view1", "view2"]


def load_diffclrec(path: str, data_path: Optional[str] = None):
    """(config, model in eval mode on the CPU, dataset, training loader) of the DiffCLRec run that wrote
    the checkpoint ``path``, rebuilt by :func:`recbole_diffcl.quick_start.load_data_and_model`."""
    from recbole_diffcl.checkpoint import read_checkpoint
    from recbole_diffcl.quick_start import load_data_and_model

    model_name = read_checkpoint(path, metadata_only=True)["config"]["model"]
    if model_name != "DiffCLRec":
        raise UserError(
            f"'{path}' is a checkpoint of {model_name}, but the view report needs DiffCLRec (the only model whose "
            f"views come from a denoiser). Fix: pass a DiffCLRec checkpoint (python run_recbole_diffcl.py "
            f"--model=DiffCLRec writes one into saved/)."
        )
    # the report reads the chosen positions compacted (N x ...), as a CPU step makes them
    overrides = dict(show_progress=False, state="ERROR", log_wandb=False, use_gpu=False, sync_free_steps=False)
    if data_path:
        overrides["data_path"] = data_path
    config, model, dataset, train_data, _, _ = load_data_and_model(path, overrides)
    return config, model, dataset, train_data


def training_rows(train_data, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user ids, item sequences, lengths, targets) of each user's longest training row."""
    from recbole_diffcl.data.dataloader import last_row_per_user

    feat = train_data._dataset.inter_feat
    rows = last_row_per_user(feat[config["USER_ID_FIELD"]], feat[config["ITEM_LIST_LENGTH_FIELD"]])
    seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    return (
        feat[config["USER_ID_FIELD"]][rows],
        feat[seq_field][rows],
        feat[config["ITEM_LIST_LENGTH_FIELD"]][rows],
        feat[config["ITEM_ID_FIELD"]][rows],
    )


@torch.no_grad()
def sample_views(model, item_seq: torch.Tensor, item_seq_len: torch.Tensor, encode: bool = True) -> dict[str, Any]:
    """One training step's view-making on these rows, as DiffCLRec does it, with the statistics recorded.

    Returns the chosen mask, the originals, the candidates (N x k ids and scores, from the scores the
    views draw from, or the denoiser's when the source is random/popularity), the replacements and views.
    """
    from recbole_diffcl import diffusion

    item_seq = model.trim(item_seq, item_seq_len)
    real = item_seq != 0
    chosen = diffusion.choose_positions(item_seq, model.mask_ratio)
    original = item_seq[chosen]
    x0, x0_pred, logits, denoiser_top = model.run_denoiser(item_seq, item_seq_len, real, chosen)
    sampled, top = model.view_replacements(item_seq, item_seq_len, chosen, real, x0, x0_pred, logits, denoiser_top)
    views = diffusion.make_views(item_seq, chosen, sampled)
    scores = None
    if top is not None and top[0] is not None:  # the scores the views drew from
        scores = top
    elif logits is not None:  # the paper's views (the denoiser's own top-k), or the denoiser's for comparison
        scores = diffusion.topk_candidates(logits, model.aug_topk)
    model.record_view_statistics(original, real, denoiser_top, sampled, top[1] if top is not None else None)
    if encode and original.numel():  # the step's InfoNCE, which records cl_acc
        original_output = model.forward(item_seq, item_seq_len) if model.cl_pair == "view_and_original" else None
        model.views_contrastive_loss(views, item_seq_len, real, original_output)
    return {"item_seq": item_seq, "chosen": chosen, "original": original, "candidates": scores,
            "sampled": sampled, "views": views}


def dataset_statistics(model, training: tuple, batch_size: int = 512) -> dict[str, float]:
    """The view statistics over every user's training sequence (``training``: :func:`training_rows`; dropout off)."""
    _, seqs, lengths, _ = training
    model.pop_statistics()
    for start in range(0, len(seqs), batch_size):
        sample_views(model, seqs[start : start + batch_size], lengths[start : start + batch_size])
    return model.pop_statistics()


@torch.no_grad()
def timestep_spectrum(model, training: tuple, timesteps: list[int], batch_size: int = 512,
                      seed: int = 2020) -> list[dict[str, float]]:
    """What the denoiser proposes at fixed timesteps, over every user's training sequence (dropout off).

    For each t: the noise's standard deviation sqrt(1 - alpha-bar_t) beside the per-dimension spread of the
    diffusion's x0 (the scaled item table), how often the original item is ranked first / among the top
    ``aug_topk`` of the candidate scores the views use (``aug_candidate_scores``, without ``aug_exclude``),
    and the mean popularity percentile of those top-k candidates (0 rarest, 1 most popular).
    """
    from recbole_diffcl import diffusion

    _, seqs, lengths, _ = training
    spread = float(model.diffusion_table()[1 : model.n_items].std())
    rows = []
    for step in timesteps:
        torch.manual_seed(seed)  # the same chosen positions and noise draws at every t
        top1 = topk = pop = 0.0
        count = 0
        for start in range(0, len(seqs), batch_size):
            item_seq_len = lengths[start : start + batch_size]
            item_seq = model.trim(seqs[start : start + batch_size], item_seq_len)
            real = item_seq != 0
            chosen = diffusion.choose_positions(item_seq, model.mask_ratio)
            if not chosen.any():
                continue
            original = item_seq[chosen]
            t = torch.full((item_seq.size(0),), step, dtype=torch.long)
            _, x0_pred, logits = model.denoise(item_seq, item_seq_len, real, chosen, t)
            top = diffusion.topk_candidates(model.candidate_scores(x0_pred, logits), model.aug_topk).indices
            top1 += float((top[:, 0] == original).sum())
            topk += float((top == original[:, None]).any(1).sum())
            if model.has_item_counts:
                pop += float(model.item_percentiles[top].mean(1).sum())
            count += original.numel()
        rows.append({
            "t": step, "noise_std": float(model.schedule.sqrt_one_minus_alphas_cumprod[step]), "x0_spread": spread,
            "recon_top1": top1 / max(count, 1), "recon_topk": topk / max(count, 1),
            "cand_pop_pct": pop / max(count, 1) if model.has_item_counts else float("nan"), "positions": count,
        })
    return rows


def pick_users(dataset, config, uids: torch.Tensor, users: Optional[str], n: int) -> list[int]:
    """Row indices (into ``uids``, the users of :func:`training_rows`) of the users named by token, or of the
    first ``n`` users."""
    if not users:
        return list(range(min(n, len(uids))))
    tokens = [t.strip() for t in users.split(",") if t.strip()]
    field = config["USER_ID_FIELD"]
    known = set(dataset.field2id_token[field][1:].tolist())
    unknown = [t for t in tokens if t not in known]
    if unknown:
        example = ",".join(map(str, dataset.field2id_token[field][1:4]))
        raise UserError(
            f"Unknown user token(s) {', '.join(unknown)} in --users: the dataset '{config['dataset']}' has no such "
            f"user_id. Fix: give user ids as written in its .inter file, comma separated (e.g. --users={example})."
        )
    position = {int(u): i for i, u in enumerate(uids.tolist())}
    ids = dataset.token2id(field, tokens)
    return [position[int(i)] for i in ids]


def report(model, dataset, config, training: tuple, rows: list[int]) -> tuple[list[str], list[dict[str, Any]]]:
    """Printed lines and CSV records of the views of these users (``training``: :func:`training_rows`)."""
    uids, seqs, lengths, targets = training
    rows_t = torch.tensor(rows, dtype=torch.long)
    out = sample_views(model, seqs[rows_t], lengths[rows_t], encode=False)
    iid, uid = config["ITEM_ID_FIELD"], config["USER_ID_FIELD"]
    token = lambda ids: [str(t) for t in dataset.id2token(iid, ids)]  # noqa: E731
    chosen, sampled, cands = out["chosen"], out["sampled"], out["candidates"]
    index_of = {}  # (row, position) -> index among the chosen positions (row-major)
    for k, (r, p) in enumerate(chosen.nonzero().tolist()):
        index_of[r, p] = k
    lines, records = [], []
    source = model.aug_source if model.aug_source != "diffusion" else f"top-{model.aug_topk} of the denoiser"
    for r, row in enumerate(rows):
        length = int(lengths[row])
        items = token(out["item_seq"][r, :length].tolist())
        user = str(dataset.id2token(uid, [int(uids[row])])[0])
        lines.append(f"user {user}: {length} items (training target {token([int(targets[row])])[0]}), replacements "
                     f"from the {source}")
        lines.append("  sequence: " + " ".join(items))
        positions = [p for p in range(length) if (r, p) in index_of]
        lines.append("  chosen positions: " + (", ".join(map(str, positions)) if positions else "none this draw"))
        for p in range(length):
            k = index_of.get((r, p))
            record = {"user_id": user, "position": p, "item": items[p], "chosen": int(k is not None),
                      "candidates": "", "candidate_scores": "", "view1": items[p], "view2": items[p]}
            if k is not None:
                drawn = token(sampled[k].tolist())
                # with cl_pair: view_and_original the second side of the pair is the original sequence
                v1, v2 = drawn if len(drawn) > 1 else (drawn[0], items[p])
                record.update(view1=v1, view2=v2)
                pair = f"view 2 {v2}" if len(drawn) > 1 else "paired with the original"
                text = f"  position {p}: {items[p]} -> view 1 {v1}, {pair}"
                if cands is not None:
                    ids, scores = token(cands.indices[k].tolist()), cands.values[k].tolist()
                    record.update(candidates=" ".join(ids), candidate_scores=" ".join(f"{s:.3f}" for s in scores))
                    text += "; candidates " + ", ".join(f"{i} ({s:.2f})" for i, s in zip(ids, scores))
                lines.append(text)
            records.append(record)
        for v, view in enumerate(out["views"]):
            lines.append(f"  view {v + 1}: " + " ".join(token(view[r, :length].tolist())))
    return lines, records


STAT_HELP = {
    "recon_top1": "denoiser's x0 prediction ranks the original item first (chosen positions, t ~ U{0..T-1})",
    "recon_topk": "original item among the denoiser's top-k",
    "repl_is_original": "replacement equal to the item it replaces",
    "chosen_views_differ": "chosen positions where the two views differ (or the view and the original)",
    "views_differ": "real positions where the two views differ (or the view and the original)",
    "pop_pct_replacement": "mean popularity percentile of the replacements (0 rarest, 1 most popular)",
    "pop_pct_original": "mean popularity percentile of the items they replace",
    "cl_acc": "InfoNCE accuracy: a view's twin (the other view, or the original) ranked first among the 2B-1 others",
    "view_cand_original": "original item among the candidates the views draw from (when those are not the "
    "denoiser's own top-k: other scores, timesteps or exclusions)",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_diffcl.views", allow_abbrev=False,
        description="Show the contrastive views a trained DiffCLRec makes: for a few users their sequence, the "
        "chosen positions, the denoiser's top-k candidates with scores and the two sampled views (printed and "
        "written as CSV), then the view statistics over the whole training set.",
    )
    parser.add_argument("--checkpoint", required=True, help="a DiffCLRec checkpoint written by the runner (saved/*.pth)")
    parser.add_argument("--users", default=None, help="comma-separated user tokens as in the .inter file")
    parser.add_argument("--n", type=int, default=5, help="without --users: how many users to show (default 5)")
    parser.add_argument("--csv", default=None, help="CSV output (default: <checkpoint>.views.csv)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ if the data moved")
    parser.add_argument("--seed", type=int, default=2020, help="seed of the random draws (default 2020)")
    parser.add_argument("--no_dataset_statistics", action="store_true", help="skip the whole-training-set pass")
    parser.add_argument("--timesteps", default=None,
                        help="comma-separated timesteps: also print what the denoiser proposes at each fixed t over "
                        "the training set (noise level, original item's top-1/top-k rate, candidates' popularity)")
    return parser.parse_args(argv)


def parse_timesteps(text: Optional[str]) -> list[int]:
    """``--timesteps``: comma-separated integers >= 0 (an empty list when not given)."""
    if not text:
        return []
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        steps = [-1]
    if not steps or min(steps) < 0:
        raise UserError(f"--timesteps={text} must be comma-separated integers >= 0. Fix: e.g. --timesteps=0,20,100,500,999.")
    return steps


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        if args.n < 1:
            raise UserError(f"--n must be a positive number of users, got {args.n}. Fix: pass --n=5, or --users=...")
        timesteps = parse_timesteps(args.timesteps)
        config, model, dataset, train_data = load_diffclrec(args.checkpoint, args.data_path)
        if timesteps and max(timesteps) >= model.schedule.steps:
            raise UserError(f"--timesteps={args.timesteps} holds a step beyond this model's diffusion_steps "
                            f"({model.schedule.steps}). Fix: give steps from 0 to {model.schedule.steps - 1}.")
        training = training_rows(train_data, config)  # read once, used by every part of the report
        rows = pick_users(dataset, config, training[0], args.users, args.n)
        torch.manual_seed(args.seed)
        lines, records = report(model, dataset, config, training, rows)
        print("\n".join(lines))
        csv_path = args.csv or args.checkpoint + ".views.csv"
        os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(records)
        print(f"views of {len(rows)} users written to {csv_path}")
        if not args.no_dataset_statistics:
            torch.manual_seed(args.seed)
            stats = dataset_statistics(model, training)
            print(f"view statistics over the {len(training[0])} training sequences "
                  f"(one draw each, dropout off):")
            for name, value in stats.items():
                print(f"  {name:20s} {value:.4f}  {STAT_HELP.get(name, '')}")
        if timesteps:
            print(f"the denoiser at fixed timesteps (candidate scores: {model.aug_candidate_scores}, diffusion input "
                  f"scale: {model.diffusion_input_scale}, top {model.aug_topk}; training sequences, dropout off):")
            print(f"  {'t':>5} {'noise std':>9} {'x0 spread':>9} {'top-1':>7} {'top-k':>7} {'cand. pop.':>10}")
            for row in timestep_spectrum(model, training, timesteps, seed=args.seed):
                print(f"  {row['t']:>5} {row['noise_std']:>9.3f} {row['x0_spread']:>9.3f} {row['recon_top1']:>7.4f} "
                      f"{row['recon_topk']:>7.4f} {row['cand_pop_pct']:>10.4f}")
        return 0

    return exit_code_of(command)


if __name__ == "__main__":
    sys.exit(main())
