"""simple-salesforce (PyPI, unmodified) against the `ledgerlink sandbox salesforce --tls` binary.

simple-salesforce only builds https URLs, so the sandbox runs with its self-signed certificate and the library's
requests session trusts that certificate. Everything below goes through the library's public API: CRUD, upsert by
external id, query and query_all across nextRecordsUrl pages, describe, the change feeds, and errors raised as the
library's own exception types.
"""

from datetime import datetime, timedelta, timezone

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)


def client(sb, session_id=None):
    session = requests.Session()
    session.verify = sb.info["cert_pem_path"]
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override Session.verify; CI machines
    # often export them, so the session must not read the environment for this loopback server.
    session.trust_env = False
    return Salesforce(
        session_id=session_id or sb.info["access_token"],
        instance_url=sb.info["instance_url"],
        version="59.0",
        session=session,
    )


def admin(sb, path, body=None, method="POST"):
    resp = requests.request(
        method, f'{sb.info["base_url"]}/sandbox/admin/{path}', json=body or {}, verify=sb.info["cert_pem_path"]
    )
    assert resp.ok, f"{path}: {resp.status_code} {resp.text}"
    return resp.json()


@pytest.fixture
def sf(salesforce_tls_sandbox):
    return client(salesforce_tls_sandbox)


def test_startup_line_is_https_with_a_certificate(salesforce_tls_sandbox):
    info = salesforce_tls_sandbox.info
    assert info["instance_url"].startswith("https://127.0.0.1:")
    with open(info["cert_pem_path"]) as f:
        assert f.read().startswith("-----BEGIN CERTIFICATE-----")


def test_crud_round_trip(sf):
    created = sf.Account.create({"Name": "Python Pies Ltd", "BillingCity": "Leeds"})
    assert created["success"] is True
    account_id = created["id"]
    record = sf.Account.get(account_id)
    assert record["Name"] == "Python Pies Ltd"
    assert record["attributes"]["type"] == "Account"
    assert sf.Account.update(account_id, {"Phone": "555-0199"}) == 204
    assert sf.Account.get(account_id)["Phone"] == "555-0199"
    contact = sf.Contact.create({"LastName": "Crust", "AccountId": account_id, "Email": "crust@pies.example"})
    assert sf.Contact.get(contact["id"])["AccountId"] == account_id
    assert sf.Account.delete(account_id) == 204
    with pytest.raises(SalesforceResourceNotFound) as err:
        sf.Account.get(account_id)
    assert err.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    deleted = sf.query_all(f"SELECT Id, IsDeleted FROM Account WHERE Id = '{account_id}'", include_deleted=True)
    assert deleted["records"][0]["IsDeleted"] is True


def test_upsert_by_external_id(sf):
    assert sf.Account.upsert("QuickBooks_Customer_Id__c/QB-7001", {"Name": "Upsert Bakery"}) == 201
    assert sf.Account.upsert("QuickBooks_Customer_Id__c/QB-7001", {"Phone": "555-0123"}) == 200
    by_ext = sf.Account.get_by_custom_id("QuickBooks_Customer_Id__c", "QB-7001")
    assert by_ext["Name"] == "Upsert Bakery" and by_ext["Phone"] == "555-0123"
    rows = sf.query("SELECT Id FROM Account WHERE QuickBooks_Customer_Id__c = 'QB-7001'")
    assert rows["totalSize"] == 1
    # Two records sharing the value: the library raises its own 300 exception and nothing changes.
    sf.Account.create({"Name": "Twin A", "QuickBooks_Customer_Id__c": "QB-TWIN"})
    sf.Account.create({"Name": "Twin B", "QuickBooks_Customer_Id__c": "QB-TWIN"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.upsert("QuickBooks_Customer_Id__c/QB-TWIN", {"Phone": "1"})


def test_query_and_query_all_follow_next_records_url(salesforce_tls_sandbox, sf):
    admin(salesforce_tls_sandbox, "settings", {"query_page_size": 3})
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert first["done"] is False
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    everything = sf.query_all("SELECT Id, Name FROM Account ORDER BY Name")
    assert everything["done"] is True
    assert len(everything["records"]) == everything["totalSize"] == first["totalSize"]
    names = [r["Name"] for r in everything["records"]]
    assert names == sorted(names, key=str.lower)
    assert len({r["Id"] for r in everything["records"]}) == len(names)
    # Relationship fields and child subqueries come back nested, as the library expects.
    opps = sf.query_all(
        "SELECT Name, Account.Name, (SELECT Quantity, TotalPrice FROM OpportunityLineItems) "
        "FROM Opportunity WHERE IsWon = true"
    )
    assert opps["totalSize"] > 0
    won = opps["records"][0]
    assert won["Account"]["Name"]
    assert won["OpportunityLineItems"]["records"][0]["TotalPrice"] is not None


def test_query_all_across_real_2000_row_pages(sf):
    for batch in range(11):
        records = [{"attributes": {"type": "Contact"}, "LastName": f"Bulk {batch}-{i}"} for i in range(200)]
        results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
        assert all(r["success"] for r in results)
    first = sf.query("SELECT Id FROM Contact WHERE LastName LIKE 'Bulk %'")
    assert first["totalSize"] == 2200
    assert len(first["records"]) == 2000 and first["done"] is False
    every = sf.query_all("SELECT Id FROM Contact WHERE LastName LIKE 'Bulk %'")
    assert len(every["records"]) == 2200
    assert len({r["Id"] for r in every["records"]}) == 2200


def test_describe_global_and_per_object(salesforce_tls_sandbox, sf):
    admin(salesforce_tls_sandbox, "fields", {"object": "Opportunity", "name": "Payment_Status__c", "type": "Text"})
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Opportunity", "OpportunityLineItem", "Task", "User"} <= names
    opp = sf.Opportunity.describe()
    fields = {f["name"]: f for f in opp["fields"]}
    assert fields["Payment_Status__c"]["custom"] is True
    assert fields["QuickBooks_Invoice_Id__c"]["type"] == "string"
    assert fields["IsWon"]["updateable"] is False
    assert any(c["relationshipName"] == "OpportunityLineItems" for c in opp["childRelationships"])


def test_change_feeds(sf):
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    created = sf.Account.create({"Name": "Feed Me Ltd"})
    gone = sf.Account.create({"Name": "Feed Gone Ltd"})
    sf.Account.delete(gone["id"])
    end = datetime.now(timezone.utc) + timedelta(minutes=5)
    updated = sf.Account.updated(start, end)
    deleted = sf.Account.deleted(start, end)
    # The window ends at the sandbox's current minute, so records of this minute may come in the next poll.
    assert set(updated) == {"ids", "latestDateCovered"}
    assert gone["id"] not in updated["ids"]
    assert "deletedRecords" in deleted and "earliestDateAvailable" in deleted
    assert created["id"] not in [d["id"] for d in deleted["deletedRecords"]]


def test_errors_are_the_librarys_own_exceptions(salesforce_tls_sandbox, sf):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Id Name FROM Account")
    assert err.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    assert "Row:1:Column:11" in err.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Nope__c FROM Account")
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Opportunity.create({"Name": "No stage"})
    assert err.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert "StageName" in err.value.content[0]["fields"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get("001000000000000AAA")
    # The day's API budget spent: 403 REQUEST_LIMIT_EXCEEDED.
    admin(salesforce_tls_sandbox, "limits", {"used": 100000})
    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    admin(salesforce_tls_sandbox, "limits", {"used": 0})
    assert sf.limits()["DailyApiRequests"]["Max"] == 100000
    # Sessions expired: 401 INVALID_SESSION_ID.
    admin(salesforce_tls_sandbox, "expire-sessions")
    with pytest.raises(SalesforceExpiredSession) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_a_refreshed_session_works_with_the_library(salesforce_tls_sandbox):
    info = salesforce_tls_sandbox.info
    resp = requests.post(
        info["token_url"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": info["refresh_token"],
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
        verify=info["cert_pem_path"],
    )
    assert resp.ok, resp.text
    token = resp.json()
    assert token["instance_url"] == info["instance_url"]
    sf = client(salesforce_tls_sandbox, session_id=token["access_token"])
    assert sf.query("SELECT COUNT() FROM Opportunity")["totalSize"] > 0
    assert sf.api_usage["api-usage"].used > 0
