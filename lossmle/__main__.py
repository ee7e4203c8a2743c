import sys

from ._cli import main

if __name__ == "__main__":  # importing the module (e.g. pytest --doctest-modules) runs nothing
    sys.exit(main())
