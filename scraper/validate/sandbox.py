"""The old name of scraper.validate.confine (each check's confinement inside a validate worker), kept so that
`import scraper.validate.sandbox` still works: this module is that one (one module object, so what a caller sets on
it, e.g. REFUSED_EVENTS, is what the checks read). "sandbox" now names only the wall (scraper.sandbox)."""

import sys

from scraper.validate import confine

sys.modules[__name__] = confine
