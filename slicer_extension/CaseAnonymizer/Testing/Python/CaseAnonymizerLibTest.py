"""Checks of CaseAnonymizerLib that need neither a server nor MRML (run by ctest in Slicer's Python).

The module's self-test (``CaseAnonymizerTest`` in ``CaseAnonymizer.py``, registered by the module's
CMakeLists.txt) covers the Logic, the views and the server round trip.
"""

import socket
import threading
import time
import unittest

from CaseAnonymizerLib import (
    CancelledError,
    ConsentStore,
    Job,
    ServerClient,
    ServerUnreachableError,
    ServerUrlError,
    UrlHistory,
    describe,
    normalize_server_url,
)


class _Settings:
    def __init__(self):
        self.data = {}

    def value(self, key, default=None):
        return self.data.get(key, default)

    def setValue(self, key, value):
        self.data[key] = value


class CaseAnonymizerLibTest(unittest.TestCase):
    def test_server_url(self):
        self.assertEqual(normalize_server_url("127.0.0.1:8000/"), "http://127.0.0.1:8000")
        with self.assertRaises(ServerUrlError):
            normalize_server_url("ftp://host")

    def test_history_and_consent(self):
        settings = _Settings()
        UrlHistory(settings).add("http://a:1")
        UrlHistory(settings).add("http://b:2")
        self.assertEqual(UrlHistory(settings).urls(), ["http://b:2", "http://a:1"])
        ConsentStore.forget_session()
        store = ConsentStore(settings)
        self.assertFalse(store.has_consent("http://a:1"))
        store.grant("http://a:1", remember=True)
        ConsentStore.forget_session()
        self.assertTrue(ConsentStore(settings).has_consent("http://a:1"))
        ConsentStore(settings).revoke("http://a:1")
        self.assertFalse(ConsentStore(settings).has_consent("http://a:1"))

    def test_job_cancel(self):
        gate = threading.Event()
        job = Job(lambda progress: gate.wait(5), "test").start()
        job.cancel()
        self.assertEqual(job.state, "cancelled")
        with self.assertRaises(CancelledError):
            job.result()
        gate.set()

    def test_server_down_message(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with self.assertRaises(ServerUnreachableError) as info:
            ServerClient(url, read_timeout=5).info()
        self.assertLess(time.monotonic() - started, 10)
        self.assertTrue(describe(info.exception)[0].startswith(f"Cannot reach the server at {url}"))


if __name__ == "__main__":
    unittest.main()
