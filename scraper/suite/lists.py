"""The old name of scraper.suite.model_lists (model lists and sharding), kept so that `scraper.suite.lists` still
imports; beside scraper.modules.listing (the scraped modules' listing), "lists" read as the same thing."""

import sys

from scraper.suite import model_lists

sys.modules[__name__] = model_lists
