"""DuoRec: contrastive regularisation with dropout views and same-target sequences.

Reference: Ruihong Qiu, Zi Huang, Hongzhi Yin, Zijian Wang. "Contrastive Learning for Representation
Degeneration Problem in Sequential Recommendation", WSDM 2022 (arXiv 2110.05730).

Views of an anchor sequence s (all encoded by the same SASRec encoder, in training mode):

* unsupervised view h': s through the encoder once more, so only the dropout masks differ from h (the
  representation used by the next-item loss);
* supervised view h_sem: another training sequence whose next item is the anchor's (sampled from
  :class:`recbole_diffcl.augment.SameTargetIndex`; the anchor itself when no other row has that target).

``contrast`` selects the contrastive terms, exactly as the authors' code (``ssl`` in their DuoRec, kept
unchanged in RecBole's FEARec, which derives from it); NCE is InfoNCE over the 2B views of the batch:

* ``un``:   lmd * NCE(h, h')                                   -> logged as ``cl_un``
* ``su``:   lmd_sem * NCE(h, h_sem)                            -> ``cl_su``
* ``us``:   lmd * NCE(h, h') + lmd_sem * NCE(h, h_sem)         -> ``cl_un``, ``cl_su``
* ``us_x``: lmd_sem * NCE(h', h_sem) (the default and the paper's DuoRec: the dropout view of the
  anchor against its same-target sequence; ``lmd`` is not used)  -> ``cl_su``

``cl_weight`` multiplies both terms (1 = the authors' loss; 0 or warm-up epochs switch them off). With
``remove_false_negatives`` the views of other batch rows with the anchor's next item are dropped from
its negatives (``info_nce(..., targets=...)``; on by default, as the project's design asks). The released
loss code (carried over unchanged into RecBole's FEARec) keeps them: ``False`` reproduces it.

With ``whole_sequence_training`` (one row per user, the next-item loss at every position) the anchor is
the user's whole training row, represented at its last position as in RecBole's prefix regime, and its
supervised positive is still drawn from all training *prefix* rows with the same next item (the index
and the prefix sequences are kept by the dataset as ``prefix_inter_feat``).

The same-target index is built once per dataset build by :class:`recbole_diffcl.data.DuoRecDataset`,
which also gives each training row its row id; the model keeps the index and the training sequences as
(non-saved) buffers so that sampling is a handful of tensor ops on the model's device.
"""
from __future__ import annotations

from typing import Optional

import torch

from recbole_diffcl import augment
from recbole_diffcl import properties as P
from recbole_diffcl.errors import UserError
from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender

CONTRAST_MODES = ("un", "su", "us", "us_x")


class DuoRec(ContrastiveSequentialRecommender):
    r"""DuoRec (Qiu et al., WSDM 2022) on RecBole's sequential data, with a SASRec encoder."""

    loss_names = ("rec", "cl_un", "cl_su")
    supports_whole_sequence = True
    property_checks = {
        "contrast": P.one_of(*CONTRAST_MODES),
        "lmd": P.non_negative(),
        "lmd_sem": P.non_negative(),
        "remove_false_negatives": P.boolean(),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.contrast = config["contrast"]
        self.lmd = config["lmd"]
        self.lmd_sem = config["lmd_sem"]
        self.remove_false_negatives = config["remove_false_negatives"]

        from recbole_diffcl.data import DuoRecDataset  # the data module imports models lazily, not at import

        index = getattr(dataset, "same_target_index", None)
        if index is None or DuoRecDataset.ROW_ID_FIELD not in dataset.inter_feat:
            raise UserError(
                "DuoRec needs its training dataset built by recbole_diffcl.data.create_dataset (DuoRecDataset: row "
                "ids and the same-target index). Fix: run it through run_recbole_diffcl.py or "
                "recbole_diffcl.quick_start.run, or build the data with recbole_diffcl.data.create_dataset."
            )
        self.ROW_ID = DuoRecDataset.ROW_ID_FIELD
        # Buffers follow .to(device) but are not saved: they are data, rebuilt with the dataset.
        for name, tensor in index.tensors().items():
            self.register_buffer(f"same_target_{name}", tensor, persistent=False)
        # Supervised positives come from all prefix rows, also when training on one whole row per user.
        prefix_rows = getattr(dataset, "prefix_inter_feat", None)
        prefix_rows = dataset.inter_feat if prefix_rows is None else prefix_rows
        self.register_buffer("train_item_seq", prefix_rows[self.ITEM_SEQ], persistent=False)
        self.register_buffer("train_item_seq_len", prefix_rows[self.ITEM_SEQ_LEN], persistent=False)
        self.initialise()

    def sample_same_target(
        self, row_ids: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Supervised positives of the anchors ``row_ids``: (sequences, lengths) of sampled same-target rows."""
        rows = augment.sample_same_target(
            row_ids,
            self.same_target_targets,
            self.same_target_rows,
            self.same_target_indptr,
            self.same_target_position,
            generator=generator,
        )
        return self.train_item_seq[rows], self.train_item_seq_len[rows]

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        if not self.cl_active():
            rec_loss = self.next_item_loss(item_seq, item_seq_len, interaction)
            zero = rec_loss.new_zeros(())
            return rec_loss, zero, zero

        need_un_view = self.contrast in ("un", "us", "us_x")
        need_su_view = self.contrast in ("su", "us", "us_x")
        h_un = h_sem = None
        if self.whole_sequence:  # the loss at every position needs the anchor's own pass
            h, rec_loss = self.encode_with_next_item_loss(item_seq, item_seq_len, interaction)
            if need_un_view:
                h_un = self.forward(item_seq, item_seq_len)
        elif need_un_view:
            # The anchor twice in one batched pass: rows are independent, dropout masks differ per row.
            h, h_un = self.encode_views([item_seq, item_seq], item_seq_len)
            rec_loss = self.rec_loss(h, interaction)
        else:
            h, rec_loss = self.encode_with_next_item_loss(item_seq, item_seq_len, interaction)
        if need_su_view:
            # A pass of its own: same-target rows have any length, and sharing the anchors' pass would widen
            # it to the longest of them (with length bucketing the anchors' batch is short).
            sem_seq, sem_len = self.sample_same_target(interaction[self.ROW_ID])
            h_sem = self.forward(sem_seq, sem_len)

        targets = interaction[self.POS_ITEM_ID] if self.remove_false_negatives else None
        zero = rec_loss.new_zeros(())
        un_loss, su_loss = zero, zero
        if self.contrast in ("un", "us"):
            un_loss = self.lmd * self.contrastive_loss(h, h_un, targets, statistic="cl_acc_un")
        if self.contrast in ("su", "us"):
            su_loss = self.lmd_sem * self.contrastive_loss(h, h_sem, targets, statistic="cl_acc_su")
        if self.contrast == "us_x":
            su_loss = self.lmd_sem * self.contrastive_loss(h_un, h_sem, targets, statistic="cl_acc_su")
        return rec_loss, self.cl_weight * un_loss, self.cl_weight * su_loss
