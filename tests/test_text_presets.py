"""The text presets (neekhara2019, r2dl, warp) against transcriptions of their originals' formulas
(docstrings of reprogram_ext/presets/{neekhara2019, r2dl, warp}.py), on randomly initialised
source models; EmbeddingPrompt's placement; VocabMapping."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reprogram_ext as rx
from reprogram_ext import presets
from reprogram_ext.nn import EmbeddingPrompt, VocabMapping
from reprogram_ext.ops.vocab_map import noise


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ Neekhara 2019


class UniRNN(nn.Module):
    """Transcription of the original's source classifier (model_classifier.uniRNN) on probabilities:
    tanh(probs @ embedding), LSTM, last state, linear."""

    def __init__(self, V_s, D, hidden, classes):
        super().__init__()
        self.char_embedding = nn.Embedding(V_s, D)
        self.lstm = nn.LSTM(D, hidden, batch_first=True)
        self.output_layer = nn.Linear(hidden, classes)

    def from_probs(self, probs):
        return self.head(probs @ self.char_embedding.weight)

    def head(self, embedded):
        out, _ = self.lstm(torch.tanh(embedded))
        return self.output_layer(out[:, -1, :])

    forward = head  # the reprogrammed path hands it the mapped embeddings


def neekhara_original(tokens, conv, seq_length, temp, training, seed):
    """seq_rewriter_gumbel.forward: pad/cut, one-hot, Conv1d, gumbel_softmax (training) or softmax;
    the noise taken from vocab_map's generator so both draw the same numbers."""
    L = tokens.shape[1]
    tokens = F.pad(tokens, (0, seq_length - L)) if L < seq_length else tokens[:, :seq_length]
    V_t = conv.in_channels
    one_hot = torch.eye(V_t, dtype=conv.weight.dtype)[tokens]
    logits = conv(one_hot.permute(0, 2, 1)).permute(0, 2, 1).contiguous()
    B, Ls, V_s = logits.shape
    flat = logits.view(B * Ls, V_s)
    if training:
        G = noise.gumbel(seed, torch.arange(B * Ls), torch.arange(V_s), flat.dtype)
        probs = F.softmax((flat + G) / temp, dim=1)
    else:
        probs = F.softmax(flat, dim=1)
    return probs.view(B, Ls, V_s)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("L", [4, 9])
def test_neekhara2019_equals_original(backend, L):
    V_t, V_s, D, S, T, seq_length = 6, 20, 8, 5, 3, 7
    source = UniRNN(V_s, D, 10, S).double()
    recipe = presets.neekhara2019(T, num_tokens=V_t, embedding=source.char_embedding.weight.detach(), num_source=S,
                                  seq_length=seq_length, backend=backend)
    rewriter = recipe.input_transform
    mapping = rewriter.mapping
    assert mapping.theta.shape == (5, V_t, V_s) and mapping.bias is not None and mapping.theta.dtype == torch.float64
    conv = nn.Conv1d(V_t, V_s, kernel_size=5, padding=2).double()
    with torch.no_grad():  # θ[j, t, s] = W[s, t, j]
        conv.weight.copy_(mapping.theta.permute(2, 1, 0))
        conv.bias.copy_(mapping.bias)
    tokens = torch.randint(0, V_t, (3, L), generator=gen(1))
    labels = torch.tensor([0, 2, 1])
    model = recipe.reprogrammer(source)

    model.eval()
    expected = source.from_probs(neekhara_original(tokens, conv, seq_length, 1.0, False, 0))[:, :T]
    torch.testing.assert_close(model(tokens), expected, rtol=1e-10, atol=1e-10)

    model.train()
    temp = rewriter.set_epoch(3)
    assert temp == pytest.approx(2.0 - 3 * (2.0 - 0.01) / 15.0)
    mapping.generator = gen(7)
    ours = model(tokens)
    seed = noise.draw_seed(gen(7))
    probs = neekhara_original(tokens, conv, seq_length, temp, True, seed)
    expected = source.from_probs(probs)[:, :T]
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    # the original's loss on the identity-mapped source logits, and its gradient to W and the bias
    F.cross_entropy(ours, labels).backward()
    F.cross_entropy(expected, labels).backward()
    torch.testing.assert_close(mapping.theta.grad, conv.weight.grad.permute(2, 1, 0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mapping.bias.grad, conv.bias.grad, rtol=1e-9, atol=1e-12)
    assert source.char_embedding.weight.grad is None  # the source model is frozen


def test_neekhara2019_temperature_schedule():
    from reprogram_ext.presets.neekhara2019 import annealed_temperature
    assert annealed_temperature(0) == 2.0
    assert annealed_temperature(15) == pytest.approx(0.01)
    assert annealed_temperature(100) == 0.01


# ------------------------------------------------------------------ R2DL


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_r2dl_equals_formula(backend):
    V_t, V_s, D, S, T, m = 7, 25, 6, 10, 3, 2
    E = torch.randn(V_s, D, generator=gen(2), dtype=torch.float64)
    recipe = presets.r2dl(T, num_tokens=V_t, embedding=E, num_source=S, per_class=m, backend=backend)
    theta = recipe.input_transform.theta
    assert theta.shape == (1, V_t, V_s)
    tokens = torch.randint(0, V_t, (2, 5), generator=gen(3))
    torch.testing.assert_close(recipe.input_transform(tokens), theta[0][tokens] @ E, rtol=1e-12, atol=1e-12)
    logits = torch.randn(4, S, generator=gen(4))
    expected = torch.stack([logits[:, [t + r * T for r in range(m)]].mean(1) for t in range(T)], 1)
    torch.testing.assert_close(recipe.output_mapping(logits), expected)
    assert recipe.input_transform.l1_penalty().item() == pytest.approx(theta.abs().sum().item())


# ------------------------------------------------------------------ WARP


def tiny_bert():
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(config).double().eval()


CLS, SEP, MASK = 1, 2, 3
PLACEHOLDERS = list(range(40, 60))  # unused ids standing for the 20 prompts (the original's prompt tokens)


def warp_original(model, recipe, input_ids, lengths):
    """The original's path: placeholder ids in a [CLS] P×5 text P×5 [MASK] P×10 [SEP] layout, the word
    embeddings substituted at the placeholders (ArpInjector), the hidden state at [MASK] through the
    MLM transform, then the linear classifier."""
    prompts = recipe.input_transform.prompt
    head = recipe.output_mapping
    B = input_ids.shape[0]
    rows, masks, at = [], [], []
    for b in range(B):
        n = int(lengths[b])
        seq = ([CLS] + PLACEHOLDERS[:5] + input_ids[b, :n].tolist() + PLACEHOLDERS[5:10] + [MASK]
               + PLACEHOLDERS[10:] + [SEP])
        at.append(seq.index(MASK))
        rows.append(seq)
    width = max(map(len, rows))
    ids = torch.zeros(B, width, dtype=torch.int64)
    attention = torch.zeros(B, width, dtype=torch.int64)
    for b, seq in enumerate(rows):
        ids[b, :len(seq)] = torch.tensor(seq)
        attention[b, :len(seq)] = 1
    embeds = model.get_input_embeddings()(ids).clone()
    for p, idx in enumerate(PLACEHOLDERS):
        embeds[ids == idx] = prompts[p]
    hidden = model(inputs_embeds=embeds, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
    h = hidden[torch.arange(B), torch.tensor(at)]
    h = model.cls.predictions.transform(h)
    return h @ head.weight.t() + head.bias


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_warp_equals_original(backend):
    model = tiny_bert()
    recipe = presets.warp(model, 3, mask_token_id=MASK, cls_token_id=CLS, sep_token_id=SEP, class_init=[10, 11, 12],
                          backend=backend)
    assert recipe.input_transform.num_prompts == 20
    words = model.get_input_embeddings().weight
    assert torch.equal(recipe.input_transform.prompt.data, words[MASK].detach().float().expand(20, -1))
    with torch.no_grad():  # move the prompts off their shared start so that their positions matter
        recipe.input_transform.prompt.add_(torch.randn(20, 16, generator=gen(5)))
    recipe.input_transform.double()
    recipe.output_mapping.double()
    torch.testing.assert_close(recipe.output_mapping.weight, model.get_output_embeddings().weight[10:13].detach())
    warp = recipe.reprogrammer(model)
    input_ids = torch.randint(5, 40, (3, 6), generator=gen(6))
    lengths = torch.tensor([6, 2, 4])
    attention = (torch.arange(6)[None, :] < lengths[:, None]).long()
    ours = warp(input_ids, attention)
    expected = warp_original(model, recipe, input_ids, lengths)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-10)
    ours.sum().backward()
    assert recipe.input_transform.prompt.grad.abs().sum() > 0
    assert recipe.output_mapping.weight.grad is not None
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ EmbeddingPrompt


def test_embedding_prompt_placement():
    D = 4
    fixed = {"cls": torch.full((D,), 10.0), "mask": torch.full((D,), 20.0)}
    prompt = EmbeddingPrompt(D, ["cls", 2, "input", 1, "mask", 1], fixed=fixed, generator=gen(0))
    x = torch.randn(3, 5, D, generator=gen(1), requires_grad=True)
    lengths = torch.tensor([5, 1, 3])
    attention = (torch.arange(5)[None, :] < lengths[:, None]).float()
    out = prompt(x, attention)
    P = prompt.prompt
    assert out.inputs_embeds.shape == (3, 11, D) and out.attention_mask.dtype == torch.float32
    for b in range(3):
        n = int(lengths[b])
        seq = torch.cat([fixed["cls"][None], P[:2], x[b, :n], P[2:3], fixed["mask"][None], P[3:4]])
        torch.testing.assert_close(out.inputs_embeds[b, :len(seq)], seq)
        assert bool((out.inputs_embeds[b, len(seq):] == 0).all())
        assert out.attention_mask[b].tolist() == [1.0] * len(seq) + [0.0] * (11 - len(seq))
        assert int(out.mask_positions[b]) == 3 + n + 1
    out.inputs_embeds.sum().backward()
    assert torch.equal(P.grad, torch.full_like(P, 3.0))  # each prompt appears once in each sample
    assert x.grad[1, 1:].abs().sum() == 0 and x.grad[1, 0].abs().sum() > 0  # padding takes no part


def test_embedding_prompt_bad_input():
    with pytest.raises(ValueError, match="'input' exactly once"):
        EmbeddingPrompt(4, [2, 3])
    with pytest.raises(ValueError, match="neither 'input' nor a fixed"):
        EmbeddingPrompt(4, [2, "input", "mask"])
    with pytest.raises(ValueError, match="must be >= 1"):
        EmbeddingPrompt(4, [0, "input"])
    prompt = EmbeddingPrompt(4, [2, "input"])
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[B, L, D=4\]"):
        prompt(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"attention_mask must be \[B=2, L=3\]"):
        prompt(torch.randn(2, 3, 4), torch.ones(2, 4))


def test_embedding_prompt_state_dict_round_trip():
    a = EmbeddingPrompt(4, ["cls", 3, "input"], fixed={"cls": torch.ones(4)}, generator=gen(1))
    b = EmbeddingPrompt(4, ["cls", 3, "input"], fixed={"cls": torch.zeros(4)}, generator=gen(2))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(a(x).inputs_embeds, b(x).inputs_embeds)


# ------------------------------------------------------------------ VocabMapping


def test_vocab_mapping_layer():
    E = torch.randn(12, 3, generator=gen(0))
    layer = VocabMapping(5, E, window=3, mode="softmax", tau=0.5, bias=True)
    tokens = torch.randint(0, 5, (2, 4), generator=gen(1))
    out = layer(tokens)
    expected = rx.vocab_map(tokens, layer.effective_theta(), E, tau=0.5, backend="reference")
    torch.testing.assert_close(out, expected)
    assert "window=3" in repr(layer) and "embedding" in dict(layer.named_buffers())
    out.sum().backward()
    assert layer.theta.grad is not None and layer.bias.grad is not None
    with pytest.raises(ValueError, match="window must be an odd"):
        VocabMapping(5, E, window=2)
