"""Readers: files into typed rows. ``table`` (CSV/TSV feature tables and sample matrices), ``mwtab``
(Metabolomics Workbench deposits) and ``signature`` (signature component lists). Readers check and parse; they
never touch the database."""
