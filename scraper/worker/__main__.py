"""`python -m scraper.worker JOB.json`: build, compile and check one model (scraper.worker.run)."""

import sys

from scraper.worker.run import main

if __name__ == "__main__":
    sys.exit(main())
