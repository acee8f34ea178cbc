"""CL4SRec: contrastive learning for sequential recommendation with random sequence augmentations.

Reference: Xu Xie, Fei Sun, Zhaoyang Liu, Shiwen Wu, Jinyang Gao, Jiandong Zhang, Bolin Ding, Bin Cui.
"Contrastive Learning for Sequential Recommendation", ICDE 2022 (arXiv 2010.14395).

Each training step:

1. ``L_rec``: SASRec next-item loss on the original sequence.
2. Two views per sequence: two distinct operations drawn at random from ``aug_operations`` (crop keeps
   a contiguous share ``crop_eta``; mask replaces a share ``mask_gamma`` of the items with a mask token;
   reorder shuffles a window of share ``reorder_beta``), one operation per view
   (see :mod:`recbole_diffcl.augment`).
3. ``L_cl`` (weight ``cl_weight``): InfoNCE between the two views' encodings over the batch.

The mask token is an extra row of the item table (id ``n_items``) that predict/full_sort_predict never
score. Unlike the public implementation, the views are new tensors: the dataloader's stored sequences
are never written to (there, mask and reorder wrote through a tensor view into the training data).
"""
from __future__ import annotations

from typing import Optional

import torch

from recbole_diffcl import augment
from recbole_diffcl import properties as P
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender


def _operation_list() -> P.Check:
    ops = augment.AUG_OPERATIONS
    return (
        lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and len(set(v)) == len(v) and all(x in ops for x in v),
        "a non-empty list of distinct operations among " + ", ".join(repr(o) for o in ops),
    )


class CL4SRec(ContrastiveSequentialRecommender):
    r"""CL4SRec (Xie et al., ICDE 2022) on RecBole's sequential data, with a SASRec encoder."""

    loss_names = ("rec", "cl")
    supports_whole_sequence = True
    extra_item_tokens = 1  # the mask token, id n_items
    property_checks = {
        "crop_eta": P.probability(),
        "mask_gamma": P.probability(),
        "reorder_beta": P.probability(),
        "aug_operations": _operation_list(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.crop_eta = config["crop_eta"]
        self.mask_gamma = config["mask_gamma"]
        self.reorder_beta = config["reorder_beta"]
        self.aug_operations = tuple(config["aug_operations"] or augment.AUG_OPERATIONS)
        self.mask_token = self.n_items
        self.initialise()

    def make_views(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Two views of each sequence (new tensors) and their lengths: ([v1, v2], [len1, len2])."""
        views, lengths, _ = augment.augment_views(
            item_seq,
            item_seq_len,
            self.aug_operations,
            mask_token=self.mask_token,
            crop_eta=self.crop_eta,
            mask_gamma=self.mask_gamma,
            reorder_beta=self.reorder_beta,
            generator=generator,
        )
        return views, lengths

    def record_view_difference(self, view1: torch.Tensor, view2: torch.Tensor) -> None:
        """Statistic ``views_differ``: the share of positions, real in either view, holding different items
        in the two views (comparable with DiffCLRec's)."""
        either = (view1 != 0) | (view2 != 0)
        self.record_statistic("views_differ", (view1 != view2) & either, either.sum())

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        if not self.cl_active():
            rec_loss = self.next_item_loss(item_seq, item_seq_len, interaction)
            return rec_loss, rec_loss.new_zeros(())

        views, lengths = self.make_views(item_seq, item_seq_len)
        self.record_view_difference(*views)
        if self.whole_sequence:  # the loss at every position needs the original's own pass
            rec_loss = self.next_item_loss(item_seq, item_seq_len, interaction)
            z1, z2 = self.forward(torch.cat(views), torch.cat(lengths)).chunk(2)
        else:
            # Original and both views in one encoder pass (rows are independent; dropout masks differ per row).
            seq_output, z1, z2 = self.forward(
                torch.cat([item_seq, *views]), torch.cat([item_seq_len, *lengths])
            ).chunk(3)
            rec_loss = self.rec_loss(seq_output, interaction)
        return rec_loss, self.cl_weight * self.contrastive_loss(z1, z2)
