"""SASRecPlus: the SASRec encoder trained with the next-item loss at every position, and nothing else.

References: Wang-Cheng Kang, Julian McAuley. "Self-Attentive Sequential Recommendation", ICDM 2018
(the encoder, and its loss at every position of a user's sequence); Anton Klenitskiy, Alexey Vasilev.
"Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023 ("SASRec+": the same
model with cross-entropy over all items, which outperforms the contrastive and bidirectional models).

It is the baseline the contrastive models must beat: the same encoder, item table, initialisation,
trainer and inference as DiffCLRec, CL4SRec and DuoRec (``ContrastiveSequentialRecommender``), with the
contrastive term taken away. With the defaults (``whole_sequence_training: True``, ``loss_type: CE``) its
loss equals DiffCLRec's recommendation loss on the same batch; ``loss_type: BCE`` gives the SASRec paper's
(and the DiffCLRec authors') binary cross-entropy with one sampled negative per position.
"""
from __future__ import annotations

import torch

from recbole_diffcl.model.contrastive import ContrastiveSequentialRecommender


class SASRecPlus(ContrastiveSequentialRecommender):
    r"""SASRec with CE over all items at every position ("SASRec+", Klenitskiy & Vasilev, RecSys 2023)."""

    loss_names = ("rec",)
    supports_whole_sequence = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.cl_weight = 0.0  # no contrastive term, whatever a shared property file says
        self.initialise()

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.next_item_loss(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction)
