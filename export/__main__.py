"""`python -m export`: not built yet; the exporter lands with the serving issue (#4)."""
import sys

sys.exit("export: not implemented yet; it lands with issue #4 (export to a Triton ensemble)")
