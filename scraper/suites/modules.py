"""--suite modules: nn.Module classes of scraped repositories (found by scraper.modules), each built from its own
dependency closure with inferred constructor arguments and inputs (scraper.worker.infer). Scraped code: its
workers run only behind the wall. Provenance and license are the repository's own."""

from scraper.suites.base import Suite

SUITE = Suite("modules", default_batch=4, scraped=True, model_list=False)
