import sys

from ._cli.main import main

if __name__ == "__main__":  # importing the module (e.g. pytest --doctest-modules) runs nothing
    sys.exit(main())
