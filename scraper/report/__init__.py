"""`triton-data report CORPUS`: one self-contained HTML page (and the same figures as JSON) about a corpus that
`triton-data build` filled (scraper/corpus.py's layout), whole or in part.

    files.py    reading the stages' files: a missing one is "not run", a malformed one a note, never a crash
    figures.py  the figures, all taken from the files: counts per stage and source, drops by reason, pass
                rates, pairs by level, histograms, sample rows -> one dict (report.json)
    bins.py     histogram bins with round edges
    page.py     that dict -> report.html (inline CSS and SVG, no script, nothing fetched; every text escaped)
    command.py  the command line
"""
