"""The int8 rerank store's kernels (colpg.int8_kernel) against the same scores in PyTorch."""

from __future__ import annotations

import ctypes
import gc

import pytest
import torch
from parts_support import ORDERS, parts_in_order

from colpg import int8_kernel, native
from colpg.codec import Int8Codec
from colpg.scoring import maxsim_blocks
from colpg.stores import Int8Store

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler here to build colpg's kernels")

#: Token counts that leave every remainder of kernel.c's block of 6, a one-token document and an empty one.
LENGTHS = [1, 6, 7, 11, 12, 0, 97, 130, 5, 250]


def _store_and_records(dim: int = 384) -> tuple[Int8Store, list[dict[str, object]]]:
    generator = torch.Generator().manual_seed(3)
    vectors = torch.nn.functional.normalize(torch.randn(sum(LENGTHS), dim, generator=generator) + 0.3, dim=1)
    store = Int8Store(Int8Codec.fit(vectors))
    docs = torch.split(vectors, LENGTHS)
    return store, [{"payload": store.encode(doc, torch.zeros(len(doc)))[0], "ntokens": len(doc)} for doc in docs]


def _float_maxsims(store: Int8Store, query: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """PyTorch's float scores: the store's scorer in float (parts 0), by blocks."""
    return torch.tensor(maxsim_blocks(store.scorer(query, parts=0), rows, torch.device("cpu")))


def test_rows_read_in_c_are_pytorchs_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    store, records = _store_and_records()
    fused = store.raws(records)
    monkeypatch.setenv(native.KERNEL_ENV, "off")
    plain = store.raws(records)
    assert [r.shape for r in fused] == [r.shape for r in plain]
    for a, b in zip(fused, plain, strict=True):
        assert torch.equal(a[:, :384], b[:, :384])
        assert torch.allclose(a[:, 384:].contiguous().view(torch.float32), b[:, 384:].contiguous().view(torch.float32), rtol=1e-6)
    assert len({r.untyped_storage().data_ptr() for r in fused if len(r)}) == len([r for r in fused if len(r)])  # cached and freed apart


def _integer_maxsims(store: Int8Store, query: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """PyTorch's integer scores: the store's scorer with the query in two int8 parts (colpg.scoring.Int8Query)."""
    return torch.tensor(maxsim_blocks(store.scorer(query, parts=2), rows, torch.device("cpu")))


def _integer_available() -> bool:
    lib = native.library()
    return lib is not None and int8_kernel.integer_kernel(lib)


def test_rows_read_in_c_leave_nothing_to_the_garbage_collector() -> None:
    """Every payload read is freed when the call returns, not by a later collection (an array of
    c_char_p held them in dicts that only the collector freed: 1.35 GB at 100k documents)."""
    store, records = _store_and_records()
    gc.collect()
    gc.disable()
    try:
        store.raws(records)
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.parametrize("integer", [False, pytest.param(True, marks=pytest.mark.skipif(not _integer_available(), reason="no AVX2 here"))])
@pytest.mark.parametrize("query_tokens", [1, 5, 16, 32, 40])
def test_the_kernel_scores_what_pytorch_scores(query_tokens: int, integer: bool) -> None:
    """In float, PyTorch's float scores; in integers, its integer scores (the same sums, scaled in
    another order), and the float ones to the query's rounding (Int8Query: millionths)."""
    store, records = _store_and_records()
    rows = store.raws(records)
    query = torch.nn.functional.normalize(torch.randn(query_tokens, 384, generator=torch.Generator().manual_seed(query_tokens)), dim=1)
    lib = native.library()
    assert lib is not None
    fused = torch.tensor(int8_kernel.maxsim_scorer(lib, query * store.codec.scales / 127, integer)(rows))
    want = _integer_maxsims(store, query, rows) if integer else _float_maxsims(store, query, rows)
    assert torch.isneginf(fused[LENGTHS.index(0)]) and torch.isneginf(want[LENGTHS.index(0)])
    present = torch.tensor(LENGTHS) > 0
    assert torch.allclose(fused[present], want[present], atol=2e-6 * query_tokens)  # float32 sums in another order
    if integer:
        assert torch.allclose(fused[present], _float_maxsims(store, query, rows)[present], atol=1e-5 * query_tokens)


@pytest.mark.skipif(not _integer_available(), reason="no AVX2 here")
@pytest.mark.parametrize("dim", [800, 400])
def test_integer_sums_past_one_span(dim: int) -> None:
    """800 dimensions: two spans of 384 and a rest of 32, each span's int32 sums taken to float before they
    could overflow; 400: a last 16 dimensions after the 32-dimension steps (AVX-512 VNNI) in 16-dimension ones."""
    store, records = _store_and_records(dim=dim)
    rows = store.raws(records)
    query = torch.nn.functional.normalize(torch.randn(8, dim, generator=torch.Generator().manual_seed(8)), dim=1)
    lib = native.library()
    assert lib is not None
    fused = torch.tensor(int8_kernel.maxsim_scorer(lib, query * store.codec.scales / 127, integer=True)(rows))
    present = torch.tensor(LENGTHS) > 0
    assert torch.allclose(fused[present], _integer_maxsims(store, query, rows)[present], atol=2e-6 * 8)


def test_a_query_of_dimensions_the_kernels_cannot_take_is_refused() -> None:
    lib = native.library()
    assert lib is not None
    with pytest.raises(ValueError, match="multiples of 16.*got 40"):
        int8_kernel.maxsim_scorer(lib, torch.zeros(4, 40))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("order", ["pool", *ORDERS])
def test_threads_split_the_rows_without_changing_a_score(monkeypatch: pytest.MonkeyPatch, order: str, integer: bool) -> None:
    """The parts share the rows (kernel.c): on the pool, or one that starts late scoring fewer, or none."""
    store, records = _store_and_records()
    rows = store.raws(records)
    query = torch.nn.functional.normalize(torch.randn(32, 384, generator=torch.Generator().manual_seed(1)), dim=1)
    lib = native.library()
    assert lib is not None
    if integer and not int8_kernel.integer_kernel(lib):
        pytest.skip("this CPU's build has no integer kernel (AVX2)")
    scorer = int8_kernel.maxsim_scorer(lib, query * store.codec.scales / 127, integer=integer)
    alone = scorer(rows)
    monkeypatch.setattr(int8_kernel, "MIN_PART_TOKENS", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    if order != "pool":
        monkeypatch.setattr(int8_kernel, "run_parts", parts_in_order(order))
    assert scorer(rows) == alone
    assert scorer([]) == []


def test_a_part_that_starts_after_the_first_returned_touches_nothing() -> None:
    store, records = _store_and_records()
    rows = store.raws(records)
    lib = native.library()
    assert lib is not None
    dim, lanes = 384, ctypes.c_int64.in_dll(lib, "colpg_int8_lanes").value
    query = native.padded(torch.randn(dim, 4, generator=torch.Generator().manual_seed(2)), lanes)  # [dim, lanes]
    work = torch.empty(ctypes.c_int64.in_dll(lib, "colpg_int8_block").value * dim + lanes)
    pointers = torch.tensor([r.data_ptr() for r in rows], dtype=torch.int64)
    counts = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    shared = torch.zeros(3, dtype=torch.int64)
    scores = torch.full((len(rows),), float("nan"))

    def part(number: int) -> None:
        lib.colpg_int8_maxsim(pointers.data_ptr(), counts.data_ptr(), len(rows), dim, query.data_ptr(), 4, lanes, work.data_ptr(),
                              scores.data_ptr(), shared.data_ptr(), number, 3)  # fmt: skip

    part(0)  # alone: it scores every row, and the two others, not started, are cancelled
    assert not scores.isnan().any()
    scores.fill_(float("nan"))
    part(2)
    part(1)
    assert scores.isnan().all()


def test_the_store_scores_in_c_where_its_products_are_the_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyTorch's int8 products pay, the store scores in C only with the kernel's AVX-512 VNNI steps
    (exact: no coarse error), else in PyTorch (coarse: the query's first int8 part)."""
    monkeypatch.setattr("colpg.stores.int8_products_pay_on", lambda device: True)
    store, _ = _store_and_records()
    query = torch.nn.functional.normalize(torch.randn(32, 384, generator=torch.Generator().manual_seed(2)), dim=1)
    for wide in (True, False):
        monkeypatch.setattr("colpg.stores.wide_kernel", lambda lib, wide=wide: wide)
        _, error = store.maxsims(query, coarse=True)
        assert (error == 0.0) is wide


def test_the_store_scores_in_c_on_a_cpu_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("colpg.stores.int8_products_pay_on", lambda device: False)
    store, records = _store_and_records()
    rows = store.raws(records)
    query = torch.nn.functional.normalize(torch.randn(32, 384, generator=torch.Generator().manual_seed(2)), dim=1)
    fused, error = store.maxsims(query, coarse=True)
    assert error == 0.0
    monkeypatch.setenv(native.KERNEL_ENV, "off")
    plain, _ = store.maxsims(query)
    present = [i for i, n in enumerate(LENGTHS) if n]
    assert torch.allclose(torch.tensor(fused(rows))[present], torch.tensor(plain(rows))[present], atol=1e-4)
    assert int8_kernel.int8_kernel(384) is None and int8_kernel.int8_kernel(100) is None
    monkeypatch.setenv(native.KERNEL_ENV, "on")
    assert int8_kernel.int8_kernel(384) is native.library()
    assert int8_kernel.int8_kernel(100) is None  # dimensions the kernel does not take stay in PyTorch


def test_malformed_rows_are_errors_that_say_what_was_expected() -> None:
    store, records = _store_and_records()
    lib = native.library()
    assert lib is not None
    scale = store.codec.scales / 127
    with pytest.raises(ValueError, match=r"row 1: 6 tokens of 384 int8 values are 2304 bytes, got 2303"):
        int8_kernel.raws(lib, [records[0]["payload"], records[1]["payload"][:-1]], [1, 6], scale)  # type: ignore[list-item]
    scorer = int8_kernel.maxsim_scorer(lib, torch.zeros(4, 384))
    with pytest.raises(ValueError, match=r"uint8 \[n, 388\], were expected; got torch.float32 \[3, 388\]"):
        scorer([torch.zeros(3, 388)])
