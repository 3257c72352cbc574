"""End-to-end demo: reprogram a frozen digit classifier (digits 0-4) to recognise digits 5-9.

Run from the repository root: ``python -m reprogram_ext.demo`` (about 1-2 minutes on 2 CPU cores) or
``python -m reprogram_ext.demo --quick`` (well under a minute). Outputs go to ``demo-output/`` (``--output`` to change).
"""
