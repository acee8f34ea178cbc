"""The diffusion module on its own: schedules, forward noising, denoiser, candidate sampling."""
import pytest
import torch

from recbole_diffcl import diffusion


@pytest.mark.parametrize("name", diffusion.NOISE_SCHEDULES)
@pytest.mark.parametrize("steps", [10, 1000])
def test_schedules_are_valid(name, steps):
    schedule = diffusion.NoiseSchedule(name, steps)
    assert schedule.betas.shape == (steps,)
    assert bool(((schedule.betas > 0) & (schedule.betas < 1)).all())
    abar = schedule.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()), "alpha-bar must decrease strictly"
    assert 0 < float(abar[-1]) < float(abar[0]) < 1


def test_sqrt_schedule_matches_diffuseq():
    # DiffuSeq: alpha-bar(s) = 1 - sqrt(s + 1e-4); step-0 cumulative alpha-bar = abar(1/T) / abar(0).
    schedule = diffusion.NoiseSchedule("sqrt", 1000)
    expected = (1 - (1 / 1000 + 1e-4) ** 0.5) / (1 - 1e-4**0.5)
    assert float(schedule.alphas_cumprod[0]) == pytest.approx(expected, rel=1e-6)


def test_unknown_schedule_rejected():
    with pytest.raises(ValueError, match="noise_schedule"):
        diffusion.make_betas("quadratic", 10)


def _seq():
    return torch.tensor([[5, 3, 9, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("dense", [False, True])
def test_choose_positions_only_real_and_ratio(dense):
    seq = torch.randint(1, 50, (400, 30))
    seq[:, 20:] = 0
    chosen = diffusion.choose_positions(seq, 0.25, torch.Generator().manual_seed(0), dense=dense)
    assert not chosen[seq == 0].any()
    assert 0.2 < chosen[seq != 0].float().mean().item() < 0.3
    assert not diffusion.choose_positions(seq, 0.0, dense=dense).any()
    assert diffusion.choose_positions(seq, 1.0, dense=dense).eq(seq != 0).all()


def test_choose_positions_same_draws_when_padding_trimmed():
    seq = _seq()
    full = diffusion.choose_positions(seq, 0.5, torch.Generator().manual_seed(3))
    trimmed = diffusion.choose_positions(seq[:, :6], 0.5, torch.Generator().manual_seed(3))
    padded = torch.cat([seq, torch.zeros(3, 10, dtype=seq.dtype)], dim=1)
    wide = diffusion.choose_positions(padded, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(full, trimmed) and torch.equal(wide[:, :6], full) and not wide[:, 6:].any()


@pytest.mark.parametrize("dense", [False, True])
def test_q_sample_leaves_unchosen_positions_exactly_unchanged(dense):
    schedule = diffusion.NoiseSchedule("sqrt", 100)
    x0 = torch.randn(3, 6, 8)
    chosen = torch.zeros(3, 6, dtype=torch.bool)
    chosen[0, 1] = chosen[1, 4] = True
    t = torch.tensor([99, 50, 10])
    x_t = diffusion.q_sample(x0, t, chosen, schedule, torch.Generator().manual_seed(0), dense=dense)
    assert torch.equal(x_t[~chosen], x0[~chosen])
    assert not torch.allclose(x_t[chosen], x0[chosen])
    # noise level follows the schedule: at t=99 the chosen vector is mostly noise
    assert float(schedule.sqrt_alphas_cumprod[99]) < 0.2


@pytest.mark.parametrize("dense", [False, True])
def test_context_noise_only_on_real_positions(dense):
    schedule = diffusion.NoiseSchedule("sqrt", 100)
    seq = _seq()
    emb = torch.randn(3, 6, 8)
    x0 = diffusion.add_context_noise(emb, seq != 0, schedule, torch.Generator().manual_seed(0), dense=dense)
    assert torch.equal(x0[seq == 0], emb[seq == 0])
    std = (x0 - emb)[seq != 0].std().item()
    assert std == pytest.approx(float(schedule.sqrt_one_minus_alphas_cumprod[0]), rel=0.6)


def test_sample_topk_never_padding_and_within_topk():
    logits = torch.randn(200, 30)
    logits[:, 0] = 100.0  # padding would win without the exclusion
    sampled = diffusion.sample_topk(logits, k=5, n_views=2, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (200, 2)
    assert (sampled != 0).all()
    masked = logits.clone()
    masked[:, 0] = -torch.inf
    top5 = masked.topk(5, dim=1).indices
    assert (sampled[:, :, None] == top5[:, None, :]).any(-1).all()
    assert (sampled[:, 0] != sampled[:, 1]).any(), "the two views draw independently"


def test_sample_topk_k_larger_than_catalogue():
    sampled = diffusion.sample_topk(torch.randn(4, 3), k=10, n_views=2)
    assert ((sampled >= 1) & (sampled <= 2)).all()


def test_views_differ_only_at_chosen_positions():
    seq = _seq()
    chosen = diffusion.choose_positions(seq, 0.5, torch.Generator().manual_seed(1))
    n = int(chosen.sum())
    sampled = torch.randint(100, 200, (n, 2))
    v1, v2 = diffusion.make_views(seq, chosen, sampled)
    for view, column in ((v1, 0), (v2, 1)):
        assert torch.equal(view[~chosen], seq[~chosen])
        assert torch.equal(view[chosen], sampled[:, column])
    assert torch.equal(seq, _seq()), "the original batch is not modified"


def _denoiser(position="relative"):
    torch.manual_seed(0)
    return diffusion.Denoiser(hidden_size=8, max_seq_length=10, n_heads=2, inner_size=16, position=position).eval()


@pytest.mark.parametrize("position", diffusion.POSITION_MODES)
def test_denoiser_ignores_padding_columns(position):
    den = _denoiser(position)
    seq = _seq()
    real = seq != 0
    x = torch.randn(3, 6, 8)
    t = torch.tensor([1, 2, 3])
    full = den(x, t, real)
    trimmed = den(x[:, :3], t, real[:, :3])  # row 1 is cut, so compare rows 0 and 2
    for row, length in ((0, 3), (2, 1)):
        torch.testing.assert_close(trimmed[row, :length], full[row, :length], atol=1e-5, rtol=1e-5)


def test_denoiser_is_bidirectional():
    den = _denoiser()
    seq = _seq()
    x = torch.randn(3, 6, 8)
    t = torch.tensor([1, 2, 3])
    base = den(x, t, seq != 0)
    x2 = x.clone()
    x2[1, 5] = torch.randn(8)  # change the last position: the first position must see it
    assert not torch.allclose(den(x2, t, seq != 0)[1, 0], base[1, 0])


def test_seeded_runs_repeat_exactly():
    schedule = diffusion.NoiseSchedule("sqrt", 100)
    den = _denoiser()
    seq = _seq()

    def once():
        g = torch.Generator().manual_seed(7)
        chosen = diffusion.choose_positions(seq, 0.5, g)
        x0 = diffusion.add_context_noise(torch.randn(3, 6, 8, generator=g), seq != 0, schedule, g)
        x_t = diffusion.q_sample(x0, torch.tensor([5, 50, 95]), chosen, schedule, g)
        x_rev = diffusion.ddim_reverse(den, x0, chosen, seq != 0, schedule, steps=3, generator=g)
        picks = diffusion.sample_topk(torch.randn(int(chosen.sum()), 20, generator=g), 5, 2, generator=g)
        return chosen, x_t, x_rev, picks

    for a, b in zip(once(), once()):
        assert torch.equal(a, b)


def test_ddim_reverse_keeps_shape_and_uses_context():
    schedule = diffusion.NoiseSchedule("sqrt", 100)
    den = _denoiser()
    seq = _seq()
    chosen = torch.zeros(3, 6, dtype=torch.bool)
    chosen[1, 2] = True
    x0 = torch.randn(3, 6, 8)
    out = diffusion.ddim_reverse(den, x0, chosen, seq != 0, schedule, steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == x0.shape and torch.isfinite(out).all()
    x0b = x0.clone()
    x0b[1, 0] = 3 * torch.randn(8)  # other context gives another prediction at the chosen position
    out_b = diffusion.ddim_reverse(den, x0b, chosen, seq != 0, schedule, steps=4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out[1, 2], out_b[1, 2])

