"""A Python client for the explanation service: sync and async, typed results, retries."""

from explain_client.client import DEFAULT_URL, AsyncClient, Client
from explain_client.errors import ApiError, ClientError, ServiceTimeoutError, UnreachableError
from explain_client.protocol import DEFAULT_MAX_IMAGES, RetryPolicy
from explain_client.results import PNG_FIELDS, ClassScore, Explanation, FeatureMap, Result

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_URL",
    "PNG_FIELDS",
    "ApiError",
    "AsyncClient",
    "ClassScore",
    "Client",
    "ClientError",
    "Explanation",
    "FeatureMap",
    "Result",
    "RetryPolicy",
    "ServiceTimeoutError",
    "UnreachableError",
]
