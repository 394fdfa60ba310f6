"""Research: experiments and their log (LOG.md), apart from the product. Run a script from the
repository root as a module: ``python -m research.<name>``."""
