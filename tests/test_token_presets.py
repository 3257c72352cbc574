"""The token presets (neekhara2022, chen2021) and TokenCanvasPrompt against transcriptions of the
originals' formulas, end to end on randomly initialised source models, and the token demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn

from reprogram_ext import presets
from reprogram_ext.nn import TokenCanvasPrompt
from reprogram_ext.presets.neekhara2022 import REG_ALPHA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)


def neekhara_original(table, sentence, *, patch, img_size, base_image_normalized, alpha, mean, std):
    """ReprogrammingFuntion.forward of paarthneekhara/multimodal_rerprogramming, transcribed: tanh of
    the embedding viewed [N, L, 3, p, p], the loop over the patches (cells past L take token L-1),
    base + alpha * canvas, unnormalise, clamp [0, 1], normalise; and pert_norm = ||canvas|| / N."""
    emb = torch.tanh(table.reshape(table.shape[0], -1)[sentence])
    N, L, _ = emb.shape
    emb = emb.view(N, L, 3, patch, patch)
    rows = img_size // patch
    image = torch.zeros(N, 3, img_size, img_size, dtype=table.dtype)
    for idx in range(rows * rows):
        i0, j0 = (idx // rows) * patch, (idx % rows) * patch
        image[:, :, i0:i0 + patch, j0:j0 + patch] = emb[:, idx] if idx < L else emb[:, L - 1]
    pert_norm = torch.norm(image, p=2) / N
    if base_image_normalized is not None:
        image = base_image_normalized[None].repeat(N, 1, 1, 1) + alpha * image
    m = torch.tensor(mean, dtype=table.dtype)[None, :, None, None]
    s = torch.tensor(std, dtype=table.dtype)[None, :, None, None]
    return (torch.clamp(image * s + m, 0.0, 1.0) - m) / s, pert_norm


def _tiny_source(num_classes=20, size=32):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, num_classes)).eval()


def test_neekhara2022_with_base_image_equals_the_original():
    base = torch.rand(3, 32, 32)
    model = _tiny_source()
    recipe = presets.neekhara2022(3, vocab_size=11, num_source=20, img_size=32, patch_size=4, base_image=base,
                                  mean=IN_MEAN, std=IN_STD, m_per_class=2, source_model=model)
    prompt = recipe.input_transform.double()
    for L in (50, 64, 70):  # fewer tokens than cells (repeat the last), exactly, more (ignored)
        tokens = torch.randint(0, 11, (3, L))
        normalized = ((base.double() - torch.tensor(IN_MEAN, dtype=torch.float64).view(3, 1, 1))
                      / torch.tensor(IN_STD, dtype=torch.float64).view(3, 1, 1))
        want, want_norm = neekhara_original(prompt.table.detach(), tokens, patch=4, img_size=32,
                                            base_image_normalized=normalized, alpha=0.2, mean=IN_MEAN, std=IN_STD)
        torch.testing.assert_close(prompt(tokens), want, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(prompt.perturbation_norm(tokens), want_norm, rtol=1e-9, atol=1e-9)
    # the label mapping: ascending argsort of the source logits on the (normalised) base image, interleaved
    labels = torch.argsort(model(normalized.float()[None])[0]).tolist()
    assert recipe.output_mapping.index.tolist() == [[labels[c], labels[c + 3]] for c in range(3)]
    logits = torch.randn(5, 20)
    want = torch.stack([logits[:, [labels[c], labels[c + 3]]].max(1).values for c in range(3)], 1)
    torch.testing.assert_close(recipe.output_mapping(logits), want)


def test_neekhara2022_without_base_image_equals_the_original():
    recipe = presets.neekhara2022(2, vocab_size=7, num_source=10, img_size=24, patch_size=8)
    prompt = recipe.input_transform.double()
    tokens = torch.randint(0, 7, (2, 5))
    want, want_norm = neekhara_original(prompt.table.detach(), tokens, patch=8, img_size=24, base_image_normalized=None,
                                        alpha=0.2, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.testing.assert_close(prompt(tokens), want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(prompt.perturbation_norm(tokens), want_norm, rtol=1e-9, atol=1e-9)
    assert recipe.output_mapping.index.tolist() == [[0], [1]]  # no source model: labels = range(S)


def test_neekhara2022_trains_end_to_end_on_a_random_source():
    model = _tiny_source(num_classes=10, size=32)
    recipe = presets.neekhara2022(2, vocab_size=30, num_source=10, img_size=32, patch_size=4, source_model=model)
    rp = recipe.reprogrammer(model)
    tokens, y = torch.randint(0, 30, (4, 40)), torch.tensor([0, 1, 1, 0])
    loss = F.cross_entropy(rp(tokens), y) + REG_ALPHA * \
        recipe.input_transform.perturbation_norm(tokens)
    loss.backward()
    g = recipe.input_transform.table.grad
    assert g is not None and g.abs().sum() > 0
    used = torch.zeros(30, dtype=torch.bool)
    used[tokens.unique()] = True
    assert g[~used].abs().sum() == 0  # tokens that do not occur get no gradient


def chen_formula(table, tokens, program, mask, *, grid, patch, size, alpha, mean, std):
    """base 0.5 + alpha * tanh(patch of each feature token) over the centred grid, + M * tanh(W), clamp, N."""
    off = (size - grid * patch + 1) // 2
    canvas = torch.zeros(tokens.shape[0], 3, size, size, dtype=table.dtype)
    for g in range(grid * grid):
        t = tokens[:, min(g, tokens.shape[1] - 1)]
        y, x = off + (g // grid) * patch, off + (g % grid) * patch
        canvas[:, :, y:y + patch, x:x + patch] = alpha * torch.tanh(table[t])
    v = 0.5 + canvas + mask * torch.tanh(program)
    m = torch.tensor(mean, dtype=table.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=table.dtype).view(1, 3, 1, 1)
    return (v.clamp(0, 1) - m) / s


def test_chen2021_equals_its_formula_and_trains():
    recipe = presets.chen2021(2, num_features=7, bins=5, num_source=10, image_size=32, patch_size=4, alpha=0.8)
    prompt = recipe.input_transform.double()
    with torch.no_grad():
        prompt.canvas.program.normal_()
    x = torch.rand(3, 7)
    tokens = prompt.tokens(x)
    assert tokens.tolist() == (torch.arange(7) * 5 + torch.round(x * 4).long()).tolist()
    c = prompt.canvas
    want = chen_formula(c.table.detach(), tokens, c.program.detach(), c.program_mask, grid=3, patch=4, size=32,
                        alpha=0.8, mean=IN_MEAN, std=IN_STD)
    torch.testing.assert_close(prompt(x), want, rtol=1e-9, atol=1e-9)
    model = _tiny_source(num_classes=10).double()
    rp = recipe.reprogrammer(model)
    F.cross_entropy(rp(x), torch.tensor([0, 1, 0])).backward()
    assert c.table.grad.abs().sum() > 0 and c.program.grad.abs().sum() > 0


def test_token_canvas_prompt_state_dict_round_trip_and_repr():
    a = TokenCanvasPrompt(5, (2, 3), (2, 2), channels=2, program=True, base=torch.rand(2, 4, 6), clamp=(0, 1),
                          mean=(0.5, 0.5), std=(0.2, 0.3))
    b = TokenCanvasPrompt(5, (2, 3), (2, 2), channels=2, program=True, base=torch.zeros(2, 4, 6), clamp=(0, 1),
                          mean=(0.5, 0.5), std=(0.2, 0.3))
    b.load_state_dict(a.state_dict())
    tokens = torch.randint(0, 5, (3, 4))
    torch.testing.assert_close(a(tokens), b(tokens))
    assert "grid=(2, 2)" in repr(a) and "normalized" in repr(a)
    one_d = TokenCanvasPrompt(4, (5,), (6,), channels=1)
    assert one_d(torch.randint(0, 4, (2, 6))).shape == (2, 1, 30)


def test_token_demo_beats_chance(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "reprogram_ext.demo.tokens", "--quick", "--output", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "tokens_results.json").read_text())
    assert results["chance"] == 0.25
    assert results["reprogrammed"] > results["chance"] + 0.15
    assert results["reprogrammed"] > results["mapping_only"]
    assert (tmp_path / "token_patches.png").stat().st_size > 0
