"""End-to-end demo: reprogram a frozen digit classifier (digits 0-4) to recognise digits 5-9.

Run from the repository root: ``python -m demo`` (about 1-2 minutes on 2 CPU cores) or
``python -m demo --quick`` (well under a minute). Outputs go to ``demo/output/``.
"""
