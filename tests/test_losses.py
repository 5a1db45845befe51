import math

import pytest
import torch
import torch.nn.functional as F

from hf_compress.distill import losses


def test_soft_kd_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.randn(4, 5)
    assert losses.soft_kd_loss(logits, logits.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.soft_kd_loss(torch.randn(4, 5), logits, temperature=2.0).item() > 0


def test_soft_kd_matches_hand_computed_kl_times_t_squared():
    s, t, temp = torch.randn(3, 4), torch.randn(3, 4), 3.0
    expected = F.kl_div(F.log_softmax(s / temp, -1), F.softmax(t / temp, -1), reduction="batchmean") * temp**2
    assert losses.soft_kd_loss(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_kd_token_level_honours_mask():
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    masked = losses.soft_kd_loss(s, t, 1.0, mask)
    t_changed = t.clone()
    t_changed[~mask] = 100 * torch.randn_like(t_changed[~mask])  # only ignored positions change
    assert losses.soft_kd_loss(s, t_changed, 1.0, mask).item() == pytest.approx(masked.item(), rel=1e-6)
    rows = torch.stack([losses.soft_kd_loss(s[b, i], t[b, i], 1.0) for b, i in [(0, 0), (0, 1), (1, 0)]])
    assert masked.item() == pytest.approx(rows.mean().item(), rel=1e-5)


def test_hard_kd_is_cross_entropy_to_teacher_argmax():
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    expected = F.cross_entropy(s, t.argmax(-1))
    assert losses.hard_kd_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_regression_kd_is_mse():
    s, t = torch.randn(5, 1), torch.randn(5, 1)
    assert losses.regression_kd_loss(s, t).item() == pytest.approx(F.mse_loss(s, t).item(), rel=1e-6)
    assert losses.regression_kd_loss(s, s).item() == 0.0


@pytest.mark.parametrize("loss_type", ["mse", "cosine"])
def test_hidden_loss_zero_on_identical_and_ignores_padding(loss_type):
    h = torch.randn(2, 6, 8)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert losses.hidden_state_loss(h, h.clone(), mask, loss_type).item() == pytest.approx(0.0, abs=1e-6)
    other = h.clone()
    other[1, 3:] += 50.0  # padding only
    assert losses.hidden_state_loss(h, other, mask, loss_type).item() == pytest.approx(0.0, abs=1e-6)
    other[0, 0] += 1.0
    assert losses.hidden_state_loss(h, other, mask, loss_type).item() > 0


def test_hidden_loss_rejects_unprojected_width():
    with pytest.raises(ValueError, match="project the student"):
        losses.hidden_state_loss(torch.randn(1, 2, 4), torch.randn(1, 2, 8))


def test_hidden_loss_gradients_flow_to_student():
    s = torch.randn(2, 3, 4, requires_grad=True)
    losses.hidden_state_loss(s, torch.randn(2, 3, 4)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def _attention(b=2, h=3, length=5, mask=None):
    scores = torch.randn(b, h, length, length)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


@pytest.mark.parametrize("loss_type", ["kl", "mse"])
def test_attention_loss_zero_on_identical_and_masks_padding(loss_type):
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    a = _attention(mask=mask)
    assert losses.attention_loss(a, a.clone(), mask, loss_type).item() == pytest.approx(0.0, abs=1e-6)
    b = a.clone()
    b[1, :, 3:, :] = torch.rand_like(b[1, :, 3:, :])  # padded query rows only
    assert losses.attention_loss(a, b, mask, loss_type).item() == pytest.approx(0.0, abs=1e-6)
    c = _attention(mask=mask)
    assert losses.attention_loss(c, a, mask, loss_type).item() > 0


def test_attention_kl_matches_rowwise_kl():
    a, b = _attention(b=1, h=1, length=3), _attention(b=1, h=1, length=3)
    expected = sum(F.kl_div(b[0, 0, i].log(), a[0, 0, i], reduction="sum") for i in range(3)) / 3
    assert losses.attention_loss(b, a, None, "kl").item() == pytest.approx(expected.item(), rel=1e-5)


def test_attention_loss_refuses_different_head_counts():
    with pytest.raises(ValueError, match="attention_head_mode='mean'"):
        losses.attention_loss(_attention(h=2), _attention(h=4))
    averaged = losses.attention_loss(losses.average_heads(_attention(h=2)), losses.average_heads(_attention(h=4)))
    assert math.isfinite(averaged.item())


def test_losses_are_float32_for_bf16_inputs():
    s, t = torch.randn(4, 3).bfloat16(), torch.randn(4, 3).bfloat16()
    assert losses.soft_kd_loss(s, t, 2.0).dtype == torch.float32
    assert losses.hidden_state_loss(s[None], t[None]).dtype == torch.float32


def test_masked_mean_of_empty_mask_is_zero_not_nan():
    assert losses.masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
