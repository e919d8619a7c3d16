"""The sandboxes answer real client libraries at all: the suites per system go much further."""

from intuitlib.client import AuthClient
from quickbooks import QuickBooks
from quickbooks.objects.customer import Customer


def test_python_quickbooks_refreshes_through_discovery_and_reads_customers(quickbooks_sandbox):
    info = quickbooks_sandbox.info
    QuickBooks.api_url_v3 = QuickBooks.sandbox_api_url_v3 = info["api_base"]
    auth = AuthClient(
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        redirect_uri="http://localhost/callback",
        environment=info["discovery_url"],
    )
    # Without an access token the client refreshes at once, through the discovery document's token endpoint.
    client = QuickBooks(auth_client=auth, refresh_token=info["refresh_token"], company_id=info["realm_id"], minorversion=75)
    assert auth.access_token, "the refresh produced an access token"
    assert auth.refresh_token != info["refresh_token"], "the refresh token rotated"
    customers = Customer.all(qb=client)
    assert len(customers) >= 5
    assert any("'" in c.DisplayName for c in customers), "the seed has a name with an apostrophe"
