"""Reports over result records: relative drops, tables, plots and the CI regression gate."""
