"""The Triton gradient writer of label_map / mapped_cross_entropy (reprogram_ext/ops/label_map/
triton_source_map.py, triton_kernels.gradient_row_kernel): the cached source -> entries map against a
loop over the index, its cache (hits, in-place writes, other indexes, inference and fake tensors, the
LRU bound, int32 indexes keyed on the caller's tensor, torch.compile building no map in the graph and
sorting once across compiled steps), and the gradients of index shapes that stress the map (duplicate
sources, many-to-one, one-to-one, row blocks without entries) against the reference, fp32 and fp16. The
map tests are plain torch (the normal process); the kernel tests run under the Triton interpreter."""
from __future__ import annotations

import pytest
import torch
from label_map_cases import LOW_ATOL, PRES, assert_close_relative, assert_low_precision_close, gen, grads

import reprogram_ext as rx
from backend_params import backend_device_params
from reprogram_ext.ops.label_map import triton_source_map as maps
from reprogram_ext.reference import label_map_reference, mapped_cross_entropy_reference


def _index(kind: str, S: int) -> torch.Tensor:
    """int64 index of a kind over S sources:
    duplicate    sources repeated inside and across groups, some padding;
    many_to_one  every target's entries on two sources (one source gets most of the entries);
    one_to_one   [T] one source per target ([T, 1] after canonicalisation);
    gaps         distinct sources in the first and last sixteenth of the row only (S = 9000: row blocks
                 without entries between them)."""
    g = gen(11)
    if kind == "duplicate":
        index = torch.randint(0, S // 3, (7, 4), generator=g)
        index[0, 3] = index[0, 0]
        index[1, 0] = index[0, 0]
        index[2, 1] = -1
        return index
    if kind == "many_to_one":
        index = torch.full((6, 5), 2, dtype=torch.int64)
        index[:, 0] = S - 1
        index[3, 4] = -1
        return index
    if kind == "one_to_one":
        return torch.randperm(S, generator=g)[:9]
    assert kind == "gaps"
    span = max(6, S // 16)
    low = torch.randperm(span, generator=g)[:6]
    high = S - 1 - torch.randperm(span, generator=g)[:6]
    return torch.cat([low, high]).reshape(4, 3)


KINDS = ("duplicate", "many_to_one", "one_to_one", "gaps")


def _expected(index: torch.Tensor, S: int, block_s: int):
    """The map written out: per source the ascending flat entries holding it, per block the most of one source."""
    flat = index.reshape(-1).tolist()
    entries = [[e for e, s in enumerate(flat) if s == src] for src in range(S)]
    blocks = [max(len(entries[s]) for s in range(b, min(b + block_s, S))) for b in range(0, S, block_s)]
    return entries, blocks


def _assert_map(m: maps.SourceMap, index: torch.Tensor, S: int, block_s: int) -> None:
    entries, blocks = _expected(index, S, block_s)
    assert m.ptr.dtype == m.ent.dtype == m.block_max.dtype == torch.int32 and m.has.dtype == torch.int8
    ptr, ent = m.ptr.tolist(), m.ent.tolist()
    assert len(ptr) == S + 1 and len(ent) == index.numel()
    for s in range(S):
        assert ent[ptr[s]:ptr[s + 1]] == entries[s], f"source {s}"
    assert m.has.tolist() == [int(bool(e)) for e in entries]
    assert m.block_max.tolist() == blocks


# ------------------------------------------------------------------ the map and its cache (plain torch)

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("S,block_s", [(40, 8), (40, 64), (37, 16)])
def test_source_map_matches_the_index(kind, S, block_s):
    index = _index(kind, S)
    _assert_map(maps.build_source_map(index, S, block_s), index, S, block_s)


def test_gaps_leave_row_blocks_without_entries():
    """The "gaps" index of the kernel tests (S = 9000) leaves a block without entries at the interpreter's
    BLOCK_S (4096) and at CUDA's (1024): the blocks that skip the entry loop."""
    index = _index("gaps", 9000)
    for block_s in (4096, 1024):
        trips = maps.build_source_map(index, 9000, block_s).block_max.tolist()
        assert 0 in trips and trips[0] == 1 and trips[-1] == 1


@pytest.fixture
def empty_cache():
    maps.clear_cache()
    yield
    maps.clear_cache()


def test_cache_hits_the_same_index(empty_cache):
    index = _index("duplicate", 40)
    first = maps.source_map(index, 40, 8)
    assert maps.source_map(index, 40, 8) is first
    assert maps.source_map(index.view(7, 4), 40, 8) is first  # a view of the same memory and shape
    assert maps.cached_maps() == 1
    assert maps.source_map(index, 40, 16) is not first  # another block size: another map
    assert maps.source_map(index, 41, 8) is not first  # another S
    assert maps.cached_maps() == 3


def test_cache_rebuilds_after_an_in_place_write(empty_cache):
    index = _index("duplicate", 40)
    before = maps.source_map(index, 40, 8)
    maps.source_map(index, 40, 16)
    index[0, 0] = 39
    after = maps.source_map(index, 40, 8)
    assert after is not before
    _assert_map(after, index, 40, 8)
    assert maps.cached_maps() == 1  # both stale maps of the written tensor dropped
    index.add_(0)  # any in-place op bumps the version, even one that changes no value
    assert maps.source_map(index, 40, 8) is not after


def test_cache_tells_indexes_of_one_shape_apart(empty_cache):
    a = _index("duplicate", 40)
    b = (a + 1) % 40
    ma, mb = maps.source_map(a, 40, 8), maps.source_map(b, 40, 8)
    _assert_map(ma, a, 40, 8)
    _assert_map(mb, b, 40, 8)
    del a  # the entry keeps its tensor alive: a new index cannot take its memory and its map
    c = (b + 5) % 40
    _assert_map(maps.source_map(c, 40, 8), c, 40, 8)


def test_cache_holds_eight_maps_least_recently_used_out(empty_cache):
    indexes = [torch.full((2, 2), s, dtype=torch.int64) for s in range(maps.CACHE_ENTRIES + 1)]
    kept = [maps.source_map(i, 16, 8) for i in indexes[:maps.CACHE_ENTRIES]]
    assert maps.source_map(indexes[0], 16, 8) is kept[0]  # now the most recently used
    maps.source_map(indexes[-1], 16, 8)
    assert maps.cached_maps() == maps.CACHE_ENTRIES
    assert maps.source_map(indexes[0], 16, 8) is kept[0]
    assert maps.source_map(indexes[1], 16, 8) is not kept[1]  # the least recently used went out


def test_inference_and_fake_tensors_are_not_cached(empty_cache):
    with torch.inference_mode():
        index = _index("many_to_one", 40)
        _assert_map(maps.source_map(index, 40, 8), index, 40, 8)
    assert maps.cached_maps() == 0
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.zeros(3, 2, dtype=torch.int64)
        m = maps.source_map(fake, 40, 8)
        assert m.ptr.shape == (41,) and m.block_max.shape == (5,)
    assert maps.cached_maps() == 0


# ------------------------------------------------------------------ the gradient writer (Triton)

TRITON = [p for p in backend_device_params(include_reference=False) if p.values[0][0] == "triton"]
# S = 9000: three row blocks (BLOCK_S = min(next_pow2(S), 4096) under the interpreter, 1024 on CUDA).
SIZES = {"duplicate": 40, "many_to_one": 40, "one_to_one": 40, "gaps": 9000}


def _label_map_case(kind, pre, reduce, dtype, device):
    S = SIZES[kind]
    index = _index(kind, S)
    logits = (3 * torch.randn(3, S, generator=gen(2))).to(dtype)
    x = logits.to(device).requires_grad_(True)
    out = rx.label_map(x, index.to(device), reduce=reduce, pre=pre, backend="triton")
    up = torch.randn(out.shape, generator=gen(4))
    (gx,) = grads(out, (x,), up.to(device=device, dtype=dtype))
    return logits, index, up, gx.cpu()


def _backward(index, logits, up, device):
    x = logits.to(device).requires_grad_(True)
    out = rx.label_map(x, index, pre="softmax", backend="triton")
    return grads(out, (x,), up.to(device))[0].cpu()


def _reference_grad(index, logits, up):
    x64 = logits.double().requires_grad_(True)
    return grads(label_map_reference(x64, index.cpu(), pre="softmax"), (x64,), up.double())[0]


if TRITON:

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("pre", PRES)
    @pytest.mark.parametrize("reduce", ["mean", "sum"])
    def test_label_map_gradient_fp32(bd, kind, pre, reduce, empty_cache):
        logits, index, up, gx = _label_map_case(kind, pre, reduce, torch.float32, bd[1])
        x64 = logits.double().requires_grad_(True)
        (want,) = grads(label_map_reference(x64, index, reduce=reduce, pre=pre), (x64,), up.double())
        assert_close_relative(gx, want)

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("kind", ["duplicate", "many_to_one", "gaps"])
    @pytest.mark.parametrize("pre", ["softmax", "log_softmax"])
    def test_label_map_gradient_fp16(bd, kind, pre, empty_cache):
        logits, index, up, gx = _label_map_case(kind, pre, "mean", torch.float16, bd[1])
        assert gx.dtype == torch.float16
        x32 = logits.float().requires_grad_(True)
        (g32,) = grads(label_map_reference(x32, index, pre=pre), (x32,), up)
        xpt = logits.clone().requires_grad_(True)
        (gpt,) = grads(label_map_reference(xpt, index, pre=pre, compute_dtype=torch.float16), (xpt,),
                       up.to(torch.float16))
        assert_low_precision_close(gx, gpt, g32, LOW_ATOL[torch.float16])

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("pre,reduce", [("softmax", "mean"), ("log_softmax", "sum"), ("none", "max")])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    def test_mapped_ce_gradient(bd, kind, pre, reduce, dtype, empty_cache):
        """pre log_softmax with reduce sum has the dense -D softmax term; softmax / none write the entries only."""
        device = bd[1]
        S = SIZES[kind]
        index = _index(kind, S)
        logits = (3 * torch.randn(4, S, generator=gen(6))).to(dtype)
        y = torch.tensor([0, 2, 1, 3])
        x = logits.to(device).requires_grad_(True)
        loss = rx.mapped_cross_entropy(x, y.to(device), index.to(device), reduce=reduce, pre=pre, backend="triton")
        (gx,) = grads(loss, (x,))
        assert gx.dtype == dtype
        x64 = logits.double().requires_grad_(True)
        (want,) = grads(mapped_cross_entropy_reference(x64, y, index, reduce=reduce, pre=pre), (x64,))
        if dtype == torch.float32:
            assert_close_relative(gx.cpu(), want)
        else:
            torch.testing.assert_close(gx.cpu().double(), want, rtol=2e-3, atol=LOW_ATOL[dtype])

    @pytest.mark.parametrize("bd", TRITON)
    def test_backward_follows_in_place_writes_and_other_indexes(bd, empty_cache, monkeypatch):
        """The map is sorted once per index tensor: a second backward with the same index builds nothing;
        after an in-place write, or with another index of the same shape, the gradient is the new index's."""
        device = bd[1]
        builds = []
        build = maps.build_source_map
        monkeypatch.setattr(maps, "build_source_map", lambda *a: builds.append(1) or build(*a))
        index = _index("duplicate", 40).to(device)
        logits = torch.randn(3, 40, generator=gen(8))
        up = torch.randn(3, 7, generator=gen(9))
        assert_close_relative(_backward(index, logits, up, device), _reference_grad(index, logits, up))
        assert_close_relative(_backward(index, logits, up, device), _reference_grad(index, logits, up))
        assert len(builds) == 1
        index[:, 0] = torch.arange(20, 27, device=device)  # in place
        assert_close_relative(_backward(index, logits, up, device), _reference_grad(index, logits, up))
        other = (index * 7 + 3) % 40  # another index of the same shape
        assert_close_relative(_backward(other, logits, up, device), _reference_grad(other, logits, up))
        assert len(builds) == 3


# ------------------------------------------------------------------ the cache key: the caller's index

def test_int32_index_reaches_the_triton_kernels_as_given():
    """canonicalize keeps an int32 index (plain torch: no Triton needed); kernel_index hands the caller's
    tensor to the Triton kernels (their source map is cached on it) and int64 to every other backend."""
    from reprogram_ext.ops.label_map.args import canonicalize, kernel_index

    index = _index("duplicate", 40).to(torch.int32)
    for chosen, same in (("triton", True), ("cpu", False), ("cuda", False), ("reference", False)):
        c = canonicalize("label_map", torch.randn(3, 40), index, None, "mean", "none")
        kernel_index(c, chosen)
        assert (c.index is index) == same and c.index.dtype == (torch.int32 if same else torch.int64)
    c = canonicalize("label_map", torch.randn(0, 40), index, None, "mean", "none")  # empty batch: the reference
    kernel_index(c, "triton")
    assert c.index.dtype == torch.int64
    c = canonicalize("label_map", torch.randn(3, 40), index.to(torch.int16), None, "mean", "none")
    assert c.index.dtype == torch.int64  # other integer dtypes: converted (a new tensor each call)


def _counting_builds(monkeypatch) -> list:
    """A list that grows by one each time a source map is built (sorted)."""
    builds = []
    build = maps.build_source_map
    monkeypatch.setattr(maps, "build_source_map", lambda *a: builds.append(1) or build(*a))
    return builds


if TRITON:

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("one_d", [False, True])
    def test_int32_index_hits_the_cache(bd, one_d, empty_cache, monkeypatch):
        """An int32 index (and its [T] form, unsqueezed to a view each call) is sorted once across calls;
        an in-place write to it is seen (its version counter), for label_map and mapped CE."""
        device = bd[1]
        builds = _counting_builds(monkeypatch)
        index = _index("one_to_one" if one_d else "duplicate", 40).to(device=device, dtype=torch.int32)
        T = index.shape[0]
        logits = torch.randn(3, 40, generator=gen(8))
        up = torch.randn(3, T, generator=gen(9))
        for _ in range(3):
            assert_close_relative(_backward(index, logits, up, device), _reference_grad(index.long(), logits, up))
        assert len(builds) == 1 and maps.cached_maps() == 1
        index[0] = 39 if one_d else torch.arange(30, 30 + index.shape[1], dtype=torch.int32)  # in place
        assert_close_relative(_backward(index, logits, up, device), _reference_grad(index.long(), logits, up))
        assert len(builds) == 2
        y = torch.tensor([0, 2, 1])
        for _ in range(2):
            x = logits.to(device).requires_grad_(True)
            (gx,) = grads(rx.mapped_cross_entropy(x, y.to(device), index, pre="softmax", backend="triton"), (x,))
            x64 = logits.double().requires_grad_(True)
            (want,) = grads(mapped_cross_entropy_reference(x64, y, index.long().cpu(), pre="softmax"), (x64,))
            assert_close_relative(gx.cpu(), want)
        assert len(builds) == 2  # the same (written) index: the map of the last build

    # ---------------------------------------------------------- torch.compile: no sort per compiled step

    @pytest.mark.parametrize("bd", TRITON)
    def test_traced_gradient_writer_has_no_sort(bd, empty_cache):
        """What torch.compile traces of the backward's gradient writer (on CUDA, triton_op's body is traced
        with fake / functional tensors): the opaque gradient-rows op, no sort or search of the index."""
        from torch.fx.experimental.proxy_tensor import make_fx

        from reprogram_ext.ops.label_map import triton_op

        index = _index("duplicate", 40).to(bd[1])
        logits, a, dense = (torch.randn(shape, device=bd[1]) for shape in ((3, 40), (3, *index.shape), (3, 3)))
        gm = make_fx(triton_op._write_gradient, tracing_mode="fake")(logits, index, a, dense, None)
        targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        assert targets == ["reprogram_ext.label_map_gradient_rows_triton.default"], targets
        assert maps.cached_maps() == 0

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("with_dense,with_scale", [(True, False), (False, True)])
    def test_gradient_rows_opcheck(bd, with_dense, with_scale, empty_cache):
        """The opaque writer op: schema, fake kernel, AOT dispatch (it has no autograd: the backward ops'
        inner launch)."""
        from reprogram_ext.ops.label_map import triton_op  # noqa: F401  (defines the op)

        device = bd[1]
        index = _index("duplicate", 40).to(device)
        logits, a = torch.randn(3, 40, device=device), torch.randn(3, *index.shape, device=device)
        dense = torch.randn(3, 3, device=device) if with_dense else None
        scale = torch.randn(3, device=device) if with_scale else None
        torch.library.opcheck(torch.ops.reprogram_ext.label_map_gradient_rows_triton, (logits, index, a, dense, scale))

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
    def test_compiled_gradient_writer_sorts_once(bd, dtype, empty_cache, monkeypatch):
        """triton_op._write_gradient compiled (dynamo + aot_eager): the map is built at run time by the
        opaque op, once across compiled calls with one index, again after an in-place write."""
        from reprogram_ext.ops.label_map import triton_op

        device = bd[1]
        builds = _counting_builds(monkeypatch)
        index = _index("duplicate", 40).to(device=device, dtype=dtype)
        logits, a, dense = torch.randn(3, 40), torch.randn(3, *index.shape), torch.randn(3, 3)
        logits, a, dense = logits.to(device), a.to(device), dense.to(device)
        compiled = torch.compile(triton_op._write_gradient, backend="aot_eager", fullgraph=True)
        want = triton_op._write_gradient(logits, index, a, dense, None)
        assert len(builds) == 1
        for _ in range(3):
            torch.testing.assert_close(compiled(logits, index, a, dense, None), want)
        assert len(builds) == 1
        index[0, 0] = 39
        torch.testing.assert_close(compiled(logits, index, a, dense, None),
                                   triton_op._write_gradient(logits, index, a, dense, None))
        assert len(builds) == 2

    @pytest.mark.parametrize("bd", TRITON)
    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
    def test_compiled_training_steps_sort_once(bd, dtype, empty_cache, monkeypatch):
        """label_map compiled (aot_eager), backward on its output: repeated steps with one index sort it once;
        after an in-place write the gradient is the new index's."""
        device = bd[1]
        builds = _counting_builds(monkeypatch)
        index = _index("duplicate", 40).to(device=device, dtype=dtype)
        logits = torch.randn(3, 40, generator=gen(8))
        up = torch.randn(3, 7, generator=gen(9))
        step = torch.compile(lambda x, i: rx.label_map(x, i, pre="softmax", backend="triton"), backend="aot_eager")

        def compiled_grad():
            x = logits.to(device).requires_grad_(True)
            return grads(step(x, index), (x,), up.to(device))[0].cpu()

        for _ in range(3):
            assert_close_relative(compiled_grad(), _reference_grad(index.long(), logits, up))
        assert len(builds) == 1
        index[:, 0] = torch.arange(20, 27, device=device, dtype=dtype)
        assert_close_relative(compiled_grad(), _reference_grad(index.long(), logits, up))
        assert len(builds) == 2
