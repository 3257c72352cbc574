"""``python -m demo``: runs demo/reprogram_digits.py."""
from demo.reprogram_digits import main

if __name__ == "__main__":
    main()
