"""Stage 2b: every jit kernel of downloaded repositories, cut out with its static dependency closure.

What other stages use (the modules suite cuts nn.Module classes out the same way):
    read_repository(location) -> RepoSource          the .py files of a zip or folder, read safely
    load_manifest(download_dir), provenance_for(source, manifest) -> Provenance
    RepoIndex.from_source(source), extract_closure(index, path, name, lineno) -> Closure
    parse_source(text, path) -> ParsedModule         ast with block salvage
    find_kernels_in_source(text, path) -> [FoundKernel]   the jit kernels of one file
Scraped code is only parsed, never imported or executed.
"""

from scraper.generator.archives import ArchiveError, RepoSource, read_repository
from scraper.generator.closure import extract_closure
from scraper.generator.detect import find_kernels_in_source
from scraper.generator.parse import parse_source
from scraper.generator.provenance import Provenance, load_manifest, provenance_for
from scraper.generator.repoindex import RepoIndex

__all__ = ["ArchiveError", "Provenance", "RepoIndex", "RepoSource", "extract_closure", "find_kernels_in_source", "load_manifest",
           "parse_source", "provenance_for", "read_repository"]
