"""The opt-in CPU output block cache (reprogram_ext.runtime; docs/runtime.md)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import reprogram_ext
from reprogram_ext import masked_perturb, runtime
from reprogram_ext.runtime.cpu_cache import parse_limit

CPP = reprogram_ext.backends()["cpp"]


def _outputs(n):
    d, m = torch.randn(3, 128, 128), torch.rand(128, 128)  # 16 x 3 x 128 x 128 float32 = 3 MiB per output
    xs = [torch.rand(16, 3, 64, 64) for _ in range(n)]
    return d, m, xs


@pytest.fixture
def cache_on():
    runtime.set_cpu_cache_limit(256)
    yield
    runtime.set_cpu_cache_limit(0)


@pytest.mark.skipif(not CPP, reason="the cache belongs to the C++ CPU kernels")
def test_large_outputs_reuse_cached_blocks_safely(cache_on):
    """With the cache on, a freed block is reused for the next output of the same size, a live one
    never is, and results do not depend on reuse."""
    d, m, xs = _outputs(3)
    refs = [masked_perturb(x, d, m, activation="sigmoid", backend="reference") for x in xs]
    first = masked_perturb(xs[0], d, m, activation="sigmoid", backend="cpu")
    ptr = first.data_ptr()
    second = masked_perturb(xs[1], d, m, activation="sigmoid", backend="cpu")  # first is alive
    assert second.data_ptr() != ptr
    torch.testing.assert_close(first, refs[0])
    del first
    third = masked_perturb(xs[2], d, m, activation="sigmoid", backend="cpu")
    assert third.data_ptr() == ptr  # the freed block came back
    torch.testing.assert_close(second, refs[1])
    torch.testing.assert_close(third, refs[2])
    reprogram_ext.empty_cpu_cache()  # frees the cached blocks; later outputs are still correct
    torch.testing.assert_close(masked_perturb(xs[1], d, m, activation="sigmoid", backend="cpu"), refs[1])


def test_environment_limit_parsing():
    assert parse_limit(None) == 0 and parse_limit("") == 0 and parse_limit(" 64 ") == 64
    for bad in ("-1", "abc", "1.5", "1e3", str(2**41)):
        with pytest.raises(ValueError, match="REPROGRAM_EXT_CPU_CACHE_MB must be a whole number"):
            parse_limit(bad)
    for bad in (-1, 1.5, True, "8"):
        with pytest.raises(ValueError, match="megabytes"):
            runtime.set_cpu_cache_limit(bad)


def test_malformed_environment_variable_fails_at_import_naming_it():
    env = dict(os.environ, REPROGRAM_EXT_CPU_CACHE_MB="lots")
    result = subprocess.run([sys.executable, "-c", "import reprogram_ext"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "REPROGRAM_EXT_CPU_CACHE_MB must be a whole number" in result.stderr and "'lots'" in result.stderr


@pytest.mark.skipif(not CPP, reason="the cache belongs to the C++ CPU kernels")
def test_off_by_default_a_zero_limit_frees_and_the_limit_caps():
    d, m, xs = _outputs(1)
    runtime.set_cpu_cache_limit(0)
    out = masked_perturb(xs[0], d, m, backend="cpu")
    del out
    assert runtime.cpu_cache_bytes() == 0  # off: the freed block went back to the system
    runtime.set_cpu_cache_limit(1)  # 1 MiB: a 3 MiB block does not fit
    out = masked_perturb(xs[0], d, m, backend="cpu")
    del out
    assert runtime.cpu_cache_bytes() == 0
    runtime.set_cpu_cache_limit(64)
    out = masked_perturb(xs[0], d, m, backend="cpu")
    del out
    assert runtime.cpu_cache_bytes() >= out_bytes(xs[0])
    runtime.set_cpu_cache_limit(0)  # lowering the limit frees what is over it
    assert runtime.cpu_cache_bytes() == 0


def out_bytes(x):
    return x.shape[0] * 3 * 128 * 128 * 4


@pytest.mark.skipif(not CPP, reason="the cache belongs to the C++ CPU kernels")
def test_environment_variable_turns_the_cache_on():
    code = ("import torch, reprogram_ext as rx\n"
            "d, m = torch.randn(3, 128, 128), torch.rand(128, 128)\n"
            "a = rx.masked_perturb(torch.rand(16, 3, 64, 64), d, m, backend='cpu'); del a\n"
            "print(rx.runtime.cpu_cache_bytes())\n")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    on = subprocess.run([sys.executable, "-c", code], env=dict(env, REPROGRAM_EXT_CPU_CACHE_MB="64"),
                        capture_output=True, text=True, timeout=120)
    off = subprocess.run([sys.executable, "-c", code], env={k: v for k, v in env.items()
                                                             if k != "REPROGRAM_EXT_CPU_CACHE_MB"},
                         capture_output=True, text=True, timeout=120)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert int(on.stdout) >= 16 * 3 * 128 * 128 * 4 and int(off.stdout) == 0


@pytest.mark.skipif(not CPP, reason="the cache belongs to the C++ CPU kernels")
def test_gradients_reuse_cached_blocks_safely(cache_on):
    """The CPU kernels' [N, S] gradients (here 1 MB, in the 64 KiB - 2 MiB tier) come from the block
    cache when it is on: a freed gradient's block is reused by the next one, a live one never is, and
    the values do not depend on reuse."""
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(256, 1000, generator=g, requires_grad=True) for _ in range(3)]
    index = torch.randperm(1000, generator=g)[:100].view(10, 10)
    y = torch.randint(0, 10, (256,), generator=g)

    def grad(x, backend):
        return torch.autograd.grad(reprogram_ext.mapped_cross_entropy(x, y, index, pre="softmax", backend=backend),
                                   x)[0]

    refs = [grad(x, "reference") for x in xs]
    first = grad(xs[0], "cpu")
    ptr = first.data_ptr()
    second = grad(xs[1], "cpu")  # first is alive
    assert second.data_ptr() != ptr
    del first
    third = grad(xs[2], "cpu")
    assert third.data_ptr() == ptr  # the freed block came back
    torch.testing.assert_close(second, refs[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(third, refs[2], rtol=1e-5, atol=1e-6)
