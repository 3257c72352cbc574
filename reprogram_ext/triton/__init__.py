"""Triton kernels of reprogram_ext, wrapped as torch.library ops with ``torch.library.triton_op``.

Modules here import triton at import time, so they are imported lazily (on the first
``backend="triton"`` call): TRITON_INTERPRET must be set before triton is imported. Each module
lists its kernels in ``AOT_KERNELS`` (see ``aot.py``) for the ahead-of-time PTX checks of
``tests/test_triton_aot.py``.
"""
