"""The Triton launches of the perturbation bank that the ahead-of-time checks compile for sm_80 / sm_90
(tests/test_triton_aot.py): BAR's 3x224x224 program, q = 20. Imported only by the checks, never by the op."""
from __future__ import annotations

import torch

from ...aot import AotKernel
from .options import DIRECTIONS
from .triton_kernels import combine_kernel, programs_kernel, sphere_partials_kernel
from .triton_op import BLOCK, _blocks

NUMEL, Q = 3 * 224 * 224, 20
SEED_LO, SEED_HI = 0x9E3779B9, 7  # an i64 and an i32 launch value, as seeds give


def aot_kernels() -> list:
    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")

    blocks = _blocks(NUMEL)
    entries = [AotKernel("bank_sphere_partials", sphere_partials_kernel,
                         dict(partial_ptr=t(Q, blocks, dtype=torch.int64), js_ptr=t(Q, dtype=torch.int32),
                              seed_lo=SEED_LO, seed_hi=SEED_HI, numel=NUMEL, blocks=blocks, BLOCK=BLOCK))]
    for kind in DIRECTIONS:
        for dtype in (torch.float32, torch.float64):
            suffix = f"{kind}_{str(dtype).split('.')[1]}"
            entries.append(AotKernel(f"bank_programs_{suffix}", programs_kernel,
                                     dict(out_ptr=t(Q + 1, NUMEL, dtype=dtype), theta_ptr=t(NUMEL, dtype=dtype),
                                          beta_ptr=t(1, dtype=dtype), js_ptr=t(Q + 1, dtype=torch.int32),
                                          signs_ptr=t(Q + 1, dtype=torch.int32), norms_ptr=t(Q + 1), seed_lo=SEED_LO,
                                          seed_hi=SEED_HI, numel=NUMEL, KIND=DIRECTIONS.index(kind), BLOCK=BLOCK)))
            entries.append(AotKernel(f"bank_combine_{suffix}", combine_kernel,
                                     dict(out_ptr=t(NUMEL, dtype=dtype), w_ptr=t(Q, dtype=dtype), norms_ptr=t(Q), q=Q,
                                          seed_lo=SEED_LO, seed_hi=SEED_HI, numel=NUMEL,
                                          KIND=DIRECTIONS.index(kind), F64=dtype == torch.float64, BLOCK=BLOCK)))
    return entries
