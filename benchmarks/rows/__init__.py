"""The comparisons of issue 6, one module per family; each returns its measured rows."""
