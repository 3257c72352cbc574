"""The ops of reprogram_ext, one package each: ``masked_perturb`` and ``label_map`` (with
``mapped_cross_entropy``). Each package holds the public function (``api``), its option vocabulary
(``options``), argument validation (``args``), the pure-PyTorch reference (``reference``), the fake
kernels and autograd (``autograd``), and the Triton kernels with their launcher (``triton_kernels``,
``triton_op``, imported on the first ``backend="triton"`` call)."""
