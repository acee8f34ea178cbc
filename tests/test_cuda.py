"""The plugin models on a GPU (skipped where none is visible; run it on a GPU machine:
``python -m pytest -q tests/test_cuda.py``): training steps and evaluation on CUDA, outputs equal to the
CPU's for one batch, nothing created on the wrong device."""
from __future__ import annotations

import pytest
import torch

from recbole_diffcl.model import CL4SRec, DiffCLRec, SASRecPlus
from tests.conftest import make_batch, make_model, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")

SMALL = dict(hidden_size=16, inner_size=32)
MODELS = [SASRecPlus, DiffCLRec, CL4SRec]


def on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


class Interaction(dict):
    """The part of RecBole's Interaction the models use (``interaction[field]``)."""


@pytest.mark.parametrize("model_class", MODELS)
def test_two_training_steps_and_scoring_on_cuda(model_class):
    torch.manual_seed(0)
    cuda = torch.device("cuda")
    model = make_model(model_class, device=cuda, mask_ratio=0.3, **SMALL).to(cuda)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = Interaction(on(make_batch(batch=16, shortest=3, longest=20), cuda))
    for _ in range(2):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        assert loss.device.type == "cuda" and torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    scores = model.eval().full_sort_predict(batch)
    assert scores.device.type == "cuda" and scores.shape == (16, model.n_items)


@pytest.mark.parametrize("model_class", MODELS)
def test_cuda_outputs_equal_cpu_outputs(model_class):
    torch.manual_seed(0)
    cpu_model = make_model(model_class, mask_ratio=0.3, **SMALL).eval()
    cuda_model = make_model(model_class, device=torch.device("cuda"), mask_ratio=0.3, **SMALL).cuda().eval()
    cuda_model.load_state_dict(cpu_model.state_dict())
    batch = Interaction(make_batch(batch=16, shortest=3, longest=20))
    expected = cpu_model.full_sort_predict(batch)
    got = cuda_model.full_sort_predict(Interaction(on(batch, "cuda"))).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the next-item loss (deterministic in eval mode with CE) agrees too
    torch.testing.assert_close(
        cuda_model.next_item_loss(*(batch[k].cuda() for k in ("item_id_list", "item_length")),
                                  Interaction(on(batch, "cuda"))).cpu(),
        cpu_model.next_item_loss(batch["item_id_list"], batch["item_length"], batch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", ["SASRecPlus", "DiffCLRec", "CL4SRec", "DuoRec"])
def test_runner_trains_and_evaluates_on_cuda(tmp_path, model):
    from recbole_diffcl.quick_start import run

    result = run(model, "ml-100k", config_dict={**tiny_config(tmp_path), "use_gpu": True})
    assert result["properties"].get("use_gpu", True) and result.get("peak_gpu_mb", 0) > 0
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
