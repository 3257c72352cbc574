"""``python -m reprogram_ext.demo``: runs demo/reprogram_digits.py."""
from .reprogram_digits import main

if __name__ == "__main__":
    main()
