"""``python -m coldseg ...`` (and ``torchrun --nproc_per_node N -m coldseg select ...``): the CLI."""
import sys

from coldseg.cli import main

if __name__ == "__main__":
    sys.argv[0] = "python -m coldseg"  # how the manifest's "command" names the program
    sys.exit(main())
