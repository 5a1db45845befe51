"""The recurrences written out from their equations: the reference the fused kernels are tested against.

Slow (a Python loop over time steps) and only for tests and teaching; the model runs torch's fused kernels.
Weights are read from an ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` by name (``weight_ih_l{k}[_reverse]`` ...), so
the same parameters drive both. Shapes: ``B`` batch, ``T`` time steps, ``I`` input width, ``H`` hidden units.

    RNN:  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    LSTM: i, f, g, o = chunk(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)    (gate order as in torch)
          c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g);  h_t = sigmoid(o) * tanh(c_t)
    GRU:  r, z, n from W_ih x_t + b_ih and W_hh h_{t-1} + b_hh, split in three;
          n_t = tanh(n_i + sigmoid(r) * n_h);  h_t = (1 - sigmoid(z)) * n_t + sigmoid(z) * h_{t-1}
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]  # (h, c) for the LSTM; the other cells use c = h (unused)


def rnn_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One tanh-RNN step. x: (B, I), h: (B, H), w_ih: (H, I), w_hh: (H, H), b_*: (H,) -> h_t (B, H)."""
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def lstm_cell(x: Tensor, state: State, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> State:
    """One LSTM step. x: (B, I), state: (h, c) each (B, H), w_ih: (4H, I), w_hh: (4H, H) -> (h_t, c_t)."""
    h, c = state
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step. x: (B, I), h: (B, H), w_ih: (3H, I), w_hh: (3H, H) -> h_t (B, H)."""
    r_i, z_i, n_i = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    n = torch.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


def _direction(module: nn.RNNBase, x: Tensor, layer: int, reverse: bool, h0: Tensor, c0: Tensor | None):
    """Run one layer in one direction over x (B, T, I) -> (outputs (B, T, H), h_T, c_T)."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    weights = [getattr(module, f"{name}{suffix}") for name in ("weight_ih", "weight_hh")]
    if module.bias:
        biases = [getattr(module, f"{name}{suffix}") for name in ("bias_ih", "bias_hh")]
    else:
        biases = [x.new_zeros(weights[0].shape[0]), x.new_zeros(weights[0].shape[0])]
    h, c = h0, c0
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    outputs: list[Tensor] = [x.new_empty(0)] * x.shape[1]
    for t in steps:
        if isinstance(module, nn.LSTM):
            h, c = lstm_cell(x[:, t], (h, c), *weights, *biases)
        elif isinstance(module, nn.GRU):
            h = gru_cell(x[:, t], h, *weights, *biases)
        elif module.nonlinearity == "tanh":
            h = rnn_cell(x[:, t], h, *weights, *biases)
        else:
            raise ValueError("The reference implements the tanh RNN (nonlinearity='tanh'), as the student uses.")
        outputs[t] = h
    return torch.stack(outputs, dim=1), h, c


def reference_forward(module: nn.RNNBase, x: Tensor, initial: Tensor | State | None = None):
    """What ``module(x, initial)`` computes, step by step (eval mode: no dropout between layers).

    module: an ``nn.RNN`` (tanh) / ``nn.LSTM`` / ``nn.GRU`` without projections; x: (B, T, I) if
    ``batch_first`` else (T, B, I); initial: h_0 (layers * dirs, B, H), or (h_0, c_0) for the LSTM, or None
    (zeros). Returns (output (B, T, dirs * H) or (T, B, dirs * H), h_n) or (output, (h_n, c_n)) as torch does.
    """
    if getattr(module, "proj_size", 0):
        raise ValueError("The reference does not implement LSTM projections (proj_size > 0).")
    if not module.batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if module.bidirectional else 1
    shape = (module.num_layers * dirs, x.shape[0], module.hidden_size)
    lstm = isinstance(module, nn.LSTM)
    if initial is None:
        h0, c0 = x.new_zeros(shape), (x.new_zeros(shape) if lstm else None)
    elif lstm:
        h0, c0 = initial
    else:
        h0, c0 = initial, None
    h_n, c_n = [], []
    layer_input = x
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            index = layer * dirs + d
            out, h, c = _direction(module, layer_input, layer, d == 1, h0[index], None if c0 is None else c0[index])
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outs, dim=-1)
    output = layer_input if module.batch_first else layer_input.transpose(0, 1)
    final_h = torch.stack(h_n)
    return (output, (final_h, torch.stack(c_n))) if lstm else (output, final_h)
