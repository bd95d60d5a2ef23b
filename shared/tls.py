"""One TLS context per process for the service's HTTP clients (Dataverse, Graph).

httpx builds a new `ssl.SSLContext` for every transport, loading the CA bundle each time (~50 ms of
CPU), and a load makes a client per activity: the benchmark's profile showed it as over a quarter of
a load batch's CPU. An SSLContext is safe to share between clients, threads and event loops.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set), built once."""
    return httpx.create_ssl_context()
