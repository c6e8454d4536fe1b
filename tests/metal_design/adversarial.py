"""Calls whose offsets hold garbage the host could not check on a GPU: AttentionParams come from
valid offsets, other tensors are bound in their place (the simulated build's
sim_forward_with_offsets op). With the simulator's bounds checking on, a kernel touching memory
outside its buffers fails the call."""

from __future__ import annotations

import torch

from batches import paged_cache, varlen_batch

BIG = 2**31 - 1


def i32(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.int32)


# Values far outside the tensors. (An unclamped access more than 64 MiB past every buffer
# crashes instead of being reported: the mild cases stay within that distance.)
CASES = {
    "cu_q_past_rows": dict(cu_q=i32(0, 50, 4000, BIG)),
    "cu_q_decreasing": dict(cu_q=i32(0, 60, 10, 75)),
    "cu_q_negative": dict(cu_q=i32(-5, -BIG, 3, -1)),
    "cu_k_past_rows": dict(cu_k=i32(0, 80, 90000, BIG)),
    "cu_k_decreasing": dict(cu_k=i32(50, 10, 89, 0)),
    "cu_k_negative": dict(cu_k=i32(-BIG, -7, 20, 89)),
    # flash-attn 3's seqused (bound where valid ones were checked): the kernels and the row
    # clearing's binary search over cu_seqlens_q stay inside every buffer.
    "seqused_q_garbage": dict(used_q=i32(-BIG, BIG, 10**6)),
    "seqused_k_garbage": dict(used_k=i32(BIG, -3, 10**6)),
    "seqused_q_and_cu_q_garbage": dict(used_q=i32(BIG, -1, 7), cu_q=i32(0, 60, 10, BIG)),
}
PAGED_CASES = {
    "table_out_of_range": dict(table_values=[-1, 10**6, BIG, -BIG, 13, 99, 3]),
    "table_and_cu_k_garbage": dict(table_values=[BIG, -2], cu_k=i32(0, 10**6, -10**6, BIG)),
}
MILD_CASES = {  # for planted-bug checks: unclamped accesses land in the simulator's red zones
    "mild_cu_q": (False, dict(cu_q=i32(0, 50, 4000, 90))),
    "mild_cu_k": (False, dict(cu_k=i32(0, 80, 9000, 89))),
    "mild_table": (True, dict(table_values=[-1, 2, 40])),
}


def adversarial_call(fa, paged: bool, decode: bool, bad: dict):
    g = torch.Generator().manual_seed(1)
    lengths_q = [1, 2, 1] if decode else [20, 45, 7]
    lengths_k = [30, 50, 9]
    batch = varlen_batch(lengths_q, lengths_k, 4, 2, 64, torch.float16, g, padding_rows=3)
    k, v, table = batch.k, batch.v, None
    bound_table = None
    if paged:  # same shape as the valid table (shapes are always checked), garbage entries
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, 8, g)
        values = bad.get("table_values")
        bound_table = table if values is None else torch.tensor(
            [values[i % len(values)] for i in range(table.numel())],
            dtype=torch.int32).view(table.shape)
    # With a bound seqused, the checked call has valid ones (each sequence's whole slot).
    used_q = i32(*lengths_q) if "used_q" in bad else None
    used_k = i32(*lengths_k) if "used_k" in bad else None
    return fa._ops.ops.sim_forward_with_offsets(
        batch.q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k, used_k, table,
        batch.max_seqlen_q, batch.max_seqlen_k, True,
        bad.get("cu_q"), bad.get("cu_k"), bad.get("used_k"), bound_table, used_q,
        bad.get("used_q"))
