"""Fixtures for the real-client suites: each starts the `ledgerlink sandbox …` binary on a free port and reads its
startup line (URL and ready-to-use credentials). The binary is the product a user runs; nothing is mocked."""

import json
import os
import subprocess

import pytest

# oauthlib refuses plain http unless told otherwise (its documented switch); the sandboxes run on loopback.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

BIN = os.environ.get("LEDGERLINK_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "ledgerlink"))


class Sandbox:
    def __init__(self, system, *extra):
        self.proc = subprocess.Popen(
            [BIN, "sandbox", system, "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sandbox {system} did not start: {self.proc.stderr.read()}")
        self.info = json.loads(line)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def quickbooks_sandbox():
    sb = Sandbox("quickbooks")
    yield sb
    sb.stop()


@pytest.fixture
def salesforce_sandbox():
    sb = Sandbox("salesforce")
    yield sb
    sb.stop()


@pytest.fixture
def salesforce_tls_sandbox():
    """The Salesforce sandbox over https (`--tls`): simple-salesforce only builds https URLs. `info["cert_pem_path"]`
    is the self-signed certificate generated at start, for `requests.Session().verify`."""
    sb = Sandbox("salesforce", "--tls")
    yield sb
    sb.stop()
