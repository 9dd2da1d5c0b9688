"""`python -m client`: not built yet; the client lands with the serving issue (#4)."""
import sys

sys.exit("client: not implemented yet; it lands with issue #4 (Python gRPC client)")
