"""`python -m scraper.suite.torchbench trim|list ...`, the command's old name: scraper.suites.torchbench."""

import sys

from scraper.suites.torchbench import main

if __name__ == "__main__":
    sys.exit(main())
