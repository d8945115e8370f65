"""--suite modules, discovery: the nn.Module classes of downloaded repositories, found and cut out statically (no
scraped code is imported or run here; the worker runs it, behind the wall).

    listing.py     every candidate class of each repository with its dependency closure (parallel, cached)
    classes.py     modules files and repositories -> Candidates (choice per repository, source kinds)
    usage.py       how a repository's own files call a class (constructor arguments, input shapes)
    needs.py       what a closure needs from the environment (missing packages and extensions: skipped)
"""
