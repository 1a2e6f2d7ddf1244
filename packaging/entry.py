"""Entry point of the frozen executable: the same CLI as the installed package."""

import multiprocessing
import sys

from appliance.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
