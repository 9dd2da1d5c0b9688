"""Query a served hf4rec recommender. Imports only tritonclient, numpy and pandas/pyarrow."""
from client.recommender import Recommendation, RecommenderClient
from client.sessions import RequestSpec, SessionBatch, session_batches

__all__ = ["Recommendation", "RecommenderClient", "RequestSpec", "SessionBatch", "session_batches"]
