"""Pure networks (no file I/O beyond parsing a given weight file): one module per family."""
