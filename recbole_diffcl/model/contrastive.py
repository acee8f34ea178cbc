"""Code shared by the contrastive sequential recommenders: SASRec encoder, view encoding, InfoNCE.

DiffCLRec, CL4SRec and DuoRec all use a causal SASRec-style Transformer (Kang & McAuley, ICDM 2018)
as the recommender, score the next item as RecBole's SASRec does, and add an InfoNCE loss between two
views of each sequence. This base class holds that common part once.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.model.loss import BPRLoss

from recbole_diffcl.data.dataloader import LOSS_START_FIELD, training_item_counts
from recbole_diffcl.errors import UserError
from recbole_diffcl.layers import attend_from_one_position, attend_from_positions
from recbole_diffcl.model.dropout import use_fast_dropout
from recbole_diffcl.model.losses import linear_cross_entropy, sampled_softmax_loss
from recbole_diffcl.model.packing import PackedBatch
from recbole_diffcl import properties as P

SIMILARITIES = ("dot", "cos")
LOSS_TYPES = ("CE", "BCE", "BPR", "SSM")
SSM_DISTRIBUTIONS = ("uniform", "popularity")
#: rounds of redrawing a BCE negative that hit an item of its row (fixed: no host sync to check for hits)
NEGATIVE_REDRAWS = 4


def sample_negatives(
    targets: torch.Tensor,
    n_items: int,
    row_items: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One negative item per target, uniform over the real items 1..n_items-1, never the target itself.

    ``targets``: B x L (or B) item ids; 0 marks padding, whose negatives are never scored. With
    ``row_items`` (B x M item ids of each row), a negative that is one of its row's items is redrawn
    (``NEGATIVE_REDRAWS`` rounds), as the authors' sampler avoids the user's own items; the target is
    excluded exactly by drawing from n_items - 2 ids and skipping over the target.
    """

    def draw() -> torch.Tensor:
        high = max(2, n_items - 1)  # ids 1..n_items-2, shifted past the target below
        neg = torch.randint(1, high, targets.shape, generator=generator, device=targets.device)
        return neg + (neg >= targets).long() * (n_items > 2)

    negatives = draw()
    if row_items is not None:
        shape = (row_items.size(0),) + (1,) * (targets.dim() - 1) + (row_items.size(1),)
        row_items = row_items.reshape(shape)
        for _ in range(NEGATIVE_REDRAWS):
            hit = (negatives.unsqueeze(-1) == row_items).any(-1)
            negatives = torch.where(hit, draw(), negatives)
    return negatives


def binary_cross_entropy(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """The authors' loss: -log sigmoid(pos) - log(1 - sigmoid(neg)), averaged over the scored positions."""
    return (F.softplus(-pos_logits) + F.softplus(neg_logits)).mean()


def info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 1.0,
    similarity: str = "dot",
    targets: Optional[torch.Tensor] = None,
    return_hits: bool = False,
):
    """InfoNCE (NT-Xent) over the 2B views of a batch.

    Each view's positive is its twin (row i of ``z1`` with row i of ``z2``); the other 2B - 2 views are
    negatives. With ``targets`` (B next-item ids), views of *other* sequences that share the anchor's
    target are removed from the negatives (they are false negatives, as in DuoRec). With ``return_hits``
    it returns (loss, hits): hits (2B bool, no gradient) says for each view whether its twin scores
    highest among its 2B - 1 candidates (the InfoNCE accuracy).
    """
    batch = z1.size(0)
    z = torch.cat([z1, z2], dim=0)
    if similarity == "cos":
        z = F.normalize(z, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity '{similarity}', expected one of {SIMILARITIES}")
    sim = z @ z.T / temperature
    idx = torch.arange(2 * batch, device=z.device)
    positives = (idx + batch) % (2 * batch)
    excluded = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    if targets is not None:
        both = torch.cat([targets, targets])
        same = both[:, None] == both[None, :]
        same[idx, positives] = False  # the twin stays the positive
        excluded |= same
    sim = sim.masked_fill(excluded, float("-inf"))
    loss = F.cross_entropy(sim, positives)
    if return_hits:
        return loss, sim.detach().argmax(1) == positives
    return loss


def trim_to_longest(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """Drop padding columns beyond the longest real sequence of the batch.

    RecBole left-aligns sequences and pads them to MAX_ITEM_LIST_LENGTH; the causal encoder's output
    at position len-1 never looks right of it, so the trimmed batch gives the same outputs.
    """
    return item_seq[:, : max(1, int(item_seq_len.max()))]


def resolve_length_sorted_passes(value, device) -> int:
    """``length_sorted_passes: auto`` -> 1 on a GPU (kernel launches dominate there, so one pass is fastest),
    8 on a CPU (compute dominates: less padding is less work; measured best in docs/speed.md)."""
    if value == "auto":
        return 1 if torch.device(device or "cpu").type == "cuda" else 8
    return int(value or 1)


class ContrastiveSequentialRecommender(SequentialRecommender):
    """SASRec encoder + next-item loss + InfoNCE helpers; subclasses add their views.

    ``calculate_loss`` of a subclass returns one weighted tensor per name in ``loss_names``
    (their sum is the training loss); the trainer logs each part by name.
    """

    loss_names: tuple[str, ...] = ("rec", "cl")
    #: whether ``calculate_loss`` supports ``whole_sequence_training`` (loss at every position)
    supports_whole_sequence: bool = False
    #: rows appended to the item table after the real items (e.g. CL4SRec's mask token); never scored.
    extra_item_tokens: int = 0
    #: properties this class reads, with their checks (see ``recbole_diffcl.properties``)
    property_checks = {
        "n_layers": P.positive_int(),
        "n_heads": P.positive_int(),
        "hidden_size": P.positive_int(),
        "inner_size": P.positive_int(),
        "hidden_dropout_prob": P.probability(upper_open=True),
        "attn_dropout_prob": P.probability(upper_open=True),
        "loss_type": P.one_of(*LOSS_TYPES),
        "cl_weight": P.non_negative(),
        "cl_temperature": P.positive(),
        "cl_similarity": P.one_of(*SIMILARITIES),
        "cl_warmup_epochs": P.non_negative_int(),
        "trim_batches": P.one_of(True, False, "auto"),
        "sync_free_steps": P.one_of(True, False, "auto"),
        "length_sorted_passes": P.positive_int_or("auto"),
        "pack_sequences": P.one_of(True, False, "auto"),
        "fused_cross_entropy": P.one_of(True, False, "auto"),
        "fast_dropout": P.one_of(True, False, "auto"),
        "ssm_negatives": P.positive_int(),
        "ssm_distribution": P.one_of(*SSM_DISTRIBUTIONS),
    }

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        # Contrastive properties (absent for SASRecPlus, which has no contrastive term).
        optional = lambda key, default: config[key] if key in config and config[key] is not None else default  # noqa: E731
        self.cl_weight = optional("cl_weight", 0.0)
        self.cl_temperature = optional("cl_temperature", 1.0)
        self.cl_similarity = optional("cl_similarity", "dot")
        self.cl_warmup_epochs = optional("cl_warmup_epochs", 0)
        on_gpu = torch.device(config["device"] or "cpu").type == "cuda"
        # On a GPU a step is launch-bound: trimming (which reads the batch's longest row on the host) and
        # compacting real positions (boolean indexing) each stop the host until the device catches up.
        optional_auto = lambda key, auto: auto if optional(key, "auto") == "auto" else bool(config[key])  # noqa: E731
        self.trim_batches = optional_auto("trim_batches", not on_gpu)
        self.sync_free = optional_auto("sync_free_steps", on_gpu)
        # CE over all items chunk by chunk (model/losses.py): less memory traffic, which bounds a CPU step
        self.fused_cross_entropy = optional_auto("fused_cross_entropy", not on_gpu)
        # dropout masks from a uniform draw (model/dropout.py); auto: for CPU tensors, decided per call
        self.fast_dropout = optional("fast_dropout", "auto")
        self.length_sorted_passes = resolve_length_sorted_passes(config["length_sorted_passes"], config["device"])
        # several sequences per row for the encoder (model/packing.py): packing reads lengths on the host
        self.pack_sequences = optional_auto("pack_sequences", not on_gpu)
        self.whole_sequence = bool(config["whole_sequence_training"])
        self.current_epoch = 0  # set by the trainer at the start of every epoch
        self._view_statistics: dict = {}  # name -> (sum, count), accumulated on the device (see record_statistic)

        self.item_embedding = nn.Embedding(self.n_items + self.extra_item_tokens, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        if self.loss_type == "BPR":
            self.loss_fct = BPRLoss()
        elif self.loss_type == "CE":
            self.loss_fct = nn.CrossEntropyLoss()
        elif self.loss_type == "BCE":
            self.loss_fct = binary_cross_entropy
        elif self.loss_type == "SSM":  # sampled softmax: ssm_negatives items shared by the batch (model/losses.py)
            self.ssm_negatives = optional("ssm_negatives", 256)
            self.register_buffer("ssm_probs", torch.zeros(0), persistent=False)
            if optional("ssm_distribution", "uniform") == "popularity":
                counts = training_item_counts(dataset, self.n_items)
                if counts is not None and counts.sum() > 0:
                    self.ssm_probs = counts / counts.sum()
        else:
            raise UserError(
                f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}. Fix: set --loss_type=CE."
            )

    # -- initialisation (as RecBole's SASRec) ---------------------------------------------------------
    def initialise(self) -> None:
        """The last step of every model's ``__init__``, once all its layers exist: weights as RecBole's
        SASRec, and every dropout layer's mask drawn as ``fast_dropout`` says."""
        self.apply(self._init_weights)
        use_fast_dropout(self, self.fast_dropout)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # -- encoder ------------------------------------------------------------------------------------
    @property
    def item_table(self) -> torch.Tensor:
        """Embeddings of the real items (padding id 0 included, extra tokens excluded): n_items x d."""
        return self.item_embedding.weight[: self.n_items]

    def trim(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """The batch without padding columns beyond its longest sequence (unless ``trim_batches`` is off)."""
        return trim_to_longest(item_seq, item_seq_len) if self.trim_batches else item_seq

    def encode_positions(self, item_seq: torch.Tensor, item_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Causal encoder output at every position (B x L x d). ``item_weight`` replaces the item table
        (e.g. a detached copy so that a loss does not move the item embeddings)."""
        h = self.embed_positions(item_seq, item_weight)
        return self.trm_encoder(h, self.get_attention_mask(item_seq), output_all_encoded_layers=False)[-1]

    def embed_positions(
        self, item_seq: torch.Tensor, item_weight: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The encoder's input: item plus position embeddings, LayerNorm, dropout (B x L x d). ``positions``
        (B x L): each item's place in its sequence, for packed rows (default: its column)."""
        item_emb = self.item_embedding(item_seq) if item_weight is None else F.embedding(item_seq, item_weight)
        if positions is None:
            h = item_emb + self.position_embedding.weight[: item_seq.size(1)][None]
        else:
            h = item_emb + self.position_embedding(positions)
        return self.dropout(self.LayerNorm(h))

    def length_sorted_plan(
        self, item_seq_len: torch.Tensor
    ) -> Optional[tuple[list[torch.Tensor], list[int], torch.Tensor]]:
        """How to run a row-independent computation in ``length_sorted_passes`` sub-batches.

        Returns (row indices of each sub-batch, its width = its longest row, the permutation that puts
        the concatenated sub-batch outputs back in batch order), or None for one pass: when the option
        is 1, trimming is off, the batch is small, or splitting would save less than a quarter of the
        padded positions (e.g. a length-bucketed batch of similar rows).
        """
        passes = self.length_sorted_passes
        if passes <= 1 or not self.trim_batches or item_seq_len.size(0) < 2 * passes:
            return None
        order = torch.argsort(item_seq_len)
        chunks = list(order.chunk(passes))
        sorted_lengths = item_seq_len[order].clamp(min=1).tolist()
        widths, end = [], 0
        for chunk in chunks:
            end += len(chunk)
            widths.append(sorted_lengths[end - 1])
        if sum(len(c) * w for c, w in zip(chunks, widths)) > 0.75 * len(order) * widths[-1]:
            return None
        return chunks, widths, torch.argsort(order)

    def forward(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Sequence representation: encoder output at the last real position (B x d).

        With ``pack_sequences``, the sequences are packed several to a row (model/packing.py); else rows
        are encoded in length-sorted sub-batches (``length_sorted_plan``), each trimmed to its own longest
        row. Either way the same outputs (rows never attend to each other), far less padding when a batch
        mixes short and long rows.
        """
        if self.pack_sequences:
            return self.encode_last_position_packed(item_seq, item_seq_len, item_weight)
        return self.map_length_sorted(
            lambda rows, lengths: self.encode_last_position(rows, lengths, item_weight),
            item_seq_len,
            self.trim(item_seq, item_seq_len),
            item_seq_len,
        )

    def encode_last_position(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The causal encoder's output at each row's last real position (B x d), as ``encode_positions``
        gathered there: every layer but the last runs at all positions, the last at that one only."""
        h = self.embed_positions(item_seq, item_weight)
        mask = self.get_attention_mask(item_seq)
        *lower, last = self.trm_encoder.layer
        for layer in lower:
            h = layer(h, mask)
        # (a row of length 0, which RecBole's sequential data never has, reads its position 0)
        h = attend_from_one_position(last.multi_head_attention, h, mask, (item_seq_len - 1).clamp(min=0))
        return last.feed_forward(h)

    def encode_last_position_packed(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``encode_last_position`` with the sequences packed several to a row: B x d, in the batch's order."""
        packed, h, mask = self.embed_packed(item_seq, item_seq_len, item_weight)
        *lower, last = self.trm_encoder.layer
        for layer in lower:
            h = layer(h, mask)
        h = attend_from_positions(last.multi_head_attention, h, mask, packed.last_rows, packed.last_columns)
        return last.feed_forward(h)

    def embed_packed(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> tuple[PackedBatch, torch.Tensor, torch.Tensor]:
        """The batch packed several sequences to a row (model/packing.py): its layout, the encoder's input
        (R x W x d) and the causal attention mask of the packed rows."""
        packed = PackedBatch(item_seq_len)
        return packed, self.embed_positions(packed.pack(item_seq), item_weight, packed.positions), packed.causal_mask()

    def map_length_sorted(self, fn, item_seq_len: torch.Tensor, *row_tensors: torch.Tensor) -> torch.Tensor:
        """``fn(*row_tensors)`` -> B x L x d (or B x d) for a row-independent ``fn``, run in length-sorted
        sub-batches.

        Tensors with a position axis (2-D and more) are cut to each sub-batch's width; outputs are padded
        back to the full width with zeros (at padded positions only, which callers never read).
        """
        plan = self.length_sorted_plan(item_seq_len)
        if plan is None:
            return fn(*row_tensors)
        chunks, widths, restore = plan
        full_width = row_tensors[0].size(1)
        outputs = []
        for rows, width in zip(chunks, widths):
            part = fn(*(t[rows, :width] if t.dim() > 1 else t[rows] for t in row_tensors))
            # per-position outputs (B x L x d) are padded back to the full width; per-row ones (B x d) are not
            outputs.append(F.pad(part, (0, 0, 0, full_width - width)) if part.dim() == 3 else part)
        return torch.cat(outputs)[restore]

    def encode_all_positions(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Causal encoder output at every position of the trimmed batch (B x L' x d): packed rows
        (``pack_sequences``) or length-sorted passes."""
        if self.pack_sequences:
            packed, h, mask = self.embed_packed(item_seq, item_seq_len, item_weight)
            h = self.trm_encoder(h, mask, output_all_encoded_layers=False)[-1]
            # the trimmed batch's width is the packed rows' (its longest sequence), without a second host read
            return packed.unpack(h, packed.width if self.trim_batches else item_seq.size(1))
        return self.map_length_sorted(
            lambda rows: self.encode_positions(rows, item_weight), item_seq_len, self.trim(item_seq, item_seq_len)
        )

    # -- losses -------------------------------------------------------------------------------------
    def score_pairs(self, outputs: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of ``items`` (any shape) for the encoder ``outputs`` (same shape + d)."""
        return (outputs * self.item_embedding(items)).sum(-1)

    def bce_loss(self, outputs: torch.Tensor, targets: torch.Tensor, row_items: torch.Tensor) -> torch.Tensor:
        """The authors' loss: BCE of the target against one uniformly drawn negative per scored output."""
        negatives = sample_negatives(targets, self.n_items, row_items)
        return self.loss_fct(self.score_pairs(outputs, targets), self.score_pairs(outputs, negatives))

    def rec_loss(self, seq_output: torch.Tensor, interaction) -> torch.Tensor:
        """Next-item loss at the last position: CE over all items (as RecBole's SASRec), SSM (sampled softmax),
        BCE against one sampled negative (the DiffCLRec authors'), or BPR with RecBole's sampled negative."""
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BCE":
            return self.bce_loss(seq_output, pos_items, interaction[self.ITEM_SEQ])
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            return self.loss_fct(self.score_pairs(seq_output, pos_items), self.score_pairs(seq_output, neg_items))
        return self.full_item_loss(seq_output, pos_items)

    def full_item_loss(self, outputs: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """The softmax loss of ``outputs`` (N x d) for ``targets`` (N) over the items: CE over all of them
        (chunked with ``fused_cross_entropy``), or ``SSM``, sampled negatives with the logQ correction."""
        if self.loss_type == "SSM":
            probs = self.ssm_probs if self.ssm_probs.numel() else None
            return sampled_softmax_loss(outputs, self.item_table, targets, self.ssm_negatives, probs, ignore_index)
        return linear_cross_entropy(outputs, self.item_table, targets, self.fused_cross_entropy, ignore_index)

    def whole_sequence_rec_loss(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction) -> torch.Tensor:
        """Next-item loss at every real position of each row (``whole_sequence_training``).

        Position i predicts item i+1, the last real position predicts the row's target, so the row's loss
        terms are those of its prefix rows in RecBole's one-row-per-prefix data (mean over them): all of
        them for a user's only (or oldest) row, the ones after its context-only positions for an older
        window of a long user.
        """
        return self.every_position_loss(self.encode_all_positions(item_seq, item_seq_len), item_seq, item_seq_len, interaction)

    def every_position_targets(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction) -> torch.Tensor:
        """B x L' next-item targets of the trimmed rows: item i+1 at position i, the row's target at its
        last real position, 0 at padding and at the context-only positions of a long user's older windows
        (the row's ``loss_start``, :func:`recbole_diffcl.data.dataloader.whole_sequence_train_data`)."""
        item_seq = self.trim(item_seq, item_seq_len)
        targets = torch.cat([item_seq[:, 1:], item_seq.new_zeros(item_seq.size(0), 1)], dim=1)
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        targets[rows, item_seq_len - 1] = interaction[self.POS_ITEM_ID]
        if LOSS_START_FIELD in interaction:
            positions = torch.arange(targets.size(1), device=targets.device)
            targets = targets.masked_fill(positions[None, :] < interaction[LOSS_START_FIELD][:, None], 0)
        return targets

    def every_position_loss(
        self, outputs: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction
    ) -> torch.Tensor:
        """The next-item loss of encoder ``outputs`` (B x L' x d, trimmed rows) at every real position.

        With ``sync_free`` every position is scored, padding included, and masked (the same value without
        boolean indexing, which makes the host wait for the device); else the real positions are compacted.
        """
        targets = self.every_position_targets(item_seq, item_seq_len, interaction)
        real = targets != 0
        if self.loss_type == "BCE":
            # the row's items: its input sequence plus its target (the authors' negatives avoid them)
            row_items = torch.cat([self.trim(item_seq, item_seq_len), interaction[self.POS_ITEM_ID][:, None]], dim=1)
            if not self.sync_free:
                return self.bce_loss(outputs[real], targets[real], row_items[real.nonzero(as_tuple=True)[0]])
            negatives = sample_negatives(targets, self.n_items, row_items)
            terms = F.softplus(-self.score_pairs(outputs, targets)) + F.softplus(self.score_pairs(outputs, negatives))
            return (terms * real).sum() / real.sum().clamp(min=1)
        if self.sync_free:  # every position scored, padding (target 0) ignored
            return self.full_item_loss(outputs.flatten(0, 1), targets.flatten(), ignore_index=0)
        return self.full_item_loss(outputs[real], targets[real])

    def next_item_loss(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction) -> torch.Tensor:
        """The recommender's loss on the original rows: at the last position, or at every position
        with ``whole_sequence_training``."""
        return self.encode_with_next_item_loss(item_seq, item_seq_len, interaction)[1]

    def encode_with_next_item_loss(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, interaction
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence representation at the last position, next-item loss) from one encoder pass."""
        if self.whole_sequence:
            outputs = self.encode_all_positions(item_seq, item_seq_len)
            loss = self.every_position_loss(outputs, item_seq, item_seq_len, interaction)
            return self.gather_indexes(outputs, item_seq_len - 1), loss
        seq_output = self.forward(item_seq, item_seq_len)
        return seq_output, self.rec_loss(seq_output, interaction)

    def cl_active(self) -> bool:
        """Whether the contrastive loss is on in the current epoch (off during ``cl_warmup_epochs``)."""
        return self.cl_weight > 0 and self.current_epoch >= self.cl_warmup_epochs

    def encode_views(
        self, views: list[torch.Tensor], item_seq_len: torch.Tensor, item_weight: Optional[torch.Tensor] = None
    ) -> list[torch.Tensor]:
        """Encode several same-length views in one batched encoder pass; returns one B x d tensor per view."""
        stacked = self.forward(torch.cat(views), item_seq_len.repeat(len(views)), item_weight)
        return list(stacked.chunk(len(views)))

    def contrastive_loss(
        self, z1: torch.Tensor, z2: torch.Tensor, targets: Optional[torch.Tensor] = None, statistic: str = "cl_acc"
    ):
        """InfoNCE between the two views; records its accuracy (twin ranked first) as ``statistic``."""
        loss, hits = info_nce(z1, z2, self.cl_temperature, self.cl_similarity, targets, return_hits=True)
        self.record_statistic(statistic, hits)
        return loss

    # -- view statistics: per-epoch means of what the training steps already computed -------------------
    def record_statistic(self, name: str, values: torch.Tensor, count=None) -> None:
        """Add ``values`` (summed) to the statistic ``name`` of the current epoch, over ``count`` items
        (default: the number of values; a tensor count is fine). Nothing is read to the host here: the
        sums stay on the model's device until :meth:`pop_statistics`."""
        total = values.detach().float().sum()
        count = values.numel() if count is None else count
        previous = self._view_statistics.get(name)
        self._view_statistics[name] = (total, count) if previous is None else (previous[0] + total, previous[1] + count)

    def pop_statistics(self) -> dict[str, float]:
        """The mean of every statistic recorded since the last call (one host read), and a fresh start."""
        recorded, self._view_statistics = self._view_statistics, {}
        if not recorded:
            return {}
        means = torch.stack([total / count for total, count in recorded.values()]).tolist()
        return {name: mean for name, mean in zip(recorded, means) if mean == mean}  # NaN: nothing counted

    # -- inference: plain SASRec scoring ------------------------------------------------------------
    def predict(self, interaction) -> torch.Tensor:
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_table.T
