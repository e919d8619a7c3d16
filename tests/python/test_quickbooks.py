"""python-quickbooks and intuit-oauth, unmodified, against `ledgerlink sandbox quickbooks`.

The clients are configured only through their documented attributes: `QuickBooks.api_url_v3` /
`sandbox_api_url_v3` and `AuthClient(environment=<discovery URL>)`. Each test asserts what a finance user checks:
totals with tax, balances after payments, credit and voids, what a change feed reports."""

import datetime
import html
import re
import urllib.parse
from decimal import Decimal

import pytest
import requests
from intuitlib.client import AuthClient
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import QuickbooksException
from quickbooks.objects.account import Account
from quickbooks.objects.base import LinkedTxn, Ref
from quickbooks.objects.bill import Bill
from quickbooks.objects.billpayment import BillPayment, BillPaymentLine, CheckPayment
from quickbooks.objects.company_info import CompanyInfo
from quickbooks.objects.creditmemo import CreditMemo
from quickbooks.objects.customer import Customer
from quickbooks.objects.department import Department
from quickbooks.objects.detailline import (AccountBasedExpenseLine, AccountBasedExpenseLineDetail, SalesItemLine,
                                           SalesItemLineDetail)
from quickbooks.objects.employee import Employee
from quickbooks.objects.estimate import Estimate
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.journalentry import JournalEntry, JournalEntryLine, JournalEntryLineDetail
from quickbooks.objects.payment import Payment, PaymentLine
from quickbooks.objects.preferences import Preferences
from quickbooks.objects.purchase import Purchase
from quickbooks.objects.purchaseorder import PurchaseOrder
from quickbooks.objects.salesreceipt import SalesReceipt
from quickbooks.objects.taxcode import TaxCode
from quickbooks.objects.taxrate import TaxRate
from quickbooks.objects.term import Term
from quickbooks.objects.timeactivity import TimeActivity
from quickbooks.objects.trackingclass import Class
from quickbooks.objects.vendor import Vendor

REDIRECT = "http://localhost/callback"


def connect(info, refresh_token=None, realm=None):
    QuickBooks.api_url_v3 = QuickBooks.sandbox_api_url_v3 = info["api_base"]
    auth = AuthClient(client_id=info["client_id"], client_secret=info["client_secret"], redirect_uri=REDIRECT,
                      environment=info["discovery_url"])
    client = QuickBooks(auth_client=auth, refresh_token=refresh_token or info["refresh_token"],
                        company_id=realm or info["realm_id"], minorversion=75)
    return auth, client


@pytest.fixture
def qb(quickbooks_sandbox):
    _, client = connect(quickbooks_sandbox.info)
    return client


def ref(value, name=None):
    r = Ref()
    r.value = str(value)
    if name:
        r.name = name
    return r


def item_line(item_id, qty=None, price=None, amount=None, tax=None):
    line = SalesItemLine()
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = ref(item_id)
    if qty is not None:
        line.SalesItemLineDetail.Qty = qty
    if price is not None:
        line.SalesItemLineDetail.UnitPrice = price
    if tax:
        line.SalesItemLineDetail.TaxCodeRef = ref(tax)
    line.Amount = amount if amount is not None else Decimal(str(qty)) * Decimal(str(price))
    return line


def new_customer(qb, name):
    c = Customer()
    c.DisplayName = name
    return c.save(qb=qb)


def invoice(qb, customer_id, lines):
    inv = Invoice()
    inv.CustomerRef = ref(customer_id)
    inv.Line = lines
    return inv.save(qb=qb)


def pay(qb, customer_id, total, applications):
    p = Payment()
    p.CustomerRef = ref(customer_id)
    p.TotalAmt = total
    for txn_id, txn_type, amount in applications:
        line = PaymentLine()
        line.Amount = amount
        link = LinkedTxn()
        link.TxnId = txn_id
        link.TxnType = txn_type
        line.LinkedTxn = [link]
        p.Line.append(line)
    return p.save(qb=qb)


def test_refresh_through_discovery_rotates_the_refresh_token(quickbooks_sandbox):
    info = quickbooks_sandbox.info
    auth, client = connect(info)
    assert auth.access_token, "the refresh produced an access token"
    assert auth.refresh_token != info["refresh_token"], "the refresh token rotated"
    customers = Customer.all(qb=client)
    assert len(customers) >= 5
    assert any("'" in c.DisplayName for c in customers), "the seed has a name with an apostrophe"
    # The superseded token still works (24 h grace); revoking ends the connection.
    auth.refresh(refresh_token=info["refresh_token"])
    auth.revoke(token=auth.refresh_token)
    with pytest.raises(Exception):
        auth.refresh(refresh_token=auth.refresh_token)


def forms(page):
    """(action, {name: value}) of every form, hidden and pre-filled fields included."""
    out = []
    for action, body in re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S):
        fields = {html.unescape(n): html.unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', body)}
        out.append((action, fields, body))
    return out


def walk_consent(info, pick, decision):
    discovery = requests.get(info["discovery_url"]).json()
    params = {"client_id": info["client_id"], "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
              "redirect_uri": REDIRECT, "state": "st-4711"}
    page = requests.get(discovery["authorization_endpoint"], params=params)
    assert page.status_code == 200 and "Sign in" in page.text
    user = re.search(r"Sandbox user: <code>([^<]+)</code> &mdash; password: <code>([^<]+)</code>", page.text)
    action, fields, _ = forms(page.text)[0]
    bad = requests.post(info["base_url"] + action, data={**fields, "password": "wrong"})
    assert bad.status_code == 401 and "not right" in bad.text
    picker = requests.post(info["base_url"] + action, data={**fields, "email": user[1], "password": user[2]})
    assert picker.status_code == 200
    action, fields, body = forms(picker.text)[0]
    listed = re.findall(r'name="realmId" value="(\d+)"[^>]*> ([^<]+) \(realm', body)
    realms = [r for r, _ in listed]
    assert len(realms) >= 3 and realms[0] == info["realm_id"]
    consent = requests.post(info["base_url"] + action, data={**fields, "realmId": realms[pick]})
    assert "com.intuit.quickbooks.accounting" in consent.text
    action, fields, _ = forms(consent.text)[0]
    back = requests.post(info["base_url"] + action, data={**fields, "decision": decision}, allow_redirects=False)
    assert back.status_code == 302
    location = urllib.parse.urlparse(back.headers["Location"])
    return realms[pick], html.unescape(listed[pick][1]), dict(urllib.parse.parse_qsl(location.query))


def test_authorize_page_sign_in_pick_company_approve_and_exchange_the_code(quickbooks_sandbox):
    info = quickbooks_sandbox.info
    realm, name, query = walk_consent(info, 1, "approve")
    assert query["state"] == "st-4711" and query["realmId"] == realm != info["realm_id"]
    auth = AuthClient(client_id=info["client_id"], client_secret=info["client_secret"], redirect_uri=REDIRECT,
                      environment=info["discovery_url"])
    auth.get_bearer_token(query["code"], realm_id=query["realmId"])
    _, client = connect(info, refresh_token=auth.refresh_token, realm=realm)
    company = CompanyInfo.get(realm, qb=client)
    assert company.CompanyName == name and "Juniper" not in name
    # The token of the second company does not open the first.
    _, other = connect(info, refresh_token=auth.refresh_token, realm=info["realm_id"])
    with pytest.raises(QuickbooksException):
        Customer.all(qb=other)
    _, _, denied = walk_consent(info, 0, "deny")
    assert denied == {"error": "access_denied", "state": "st-4711"}


def test_name_lists_create_read_update_query(qb):
    c = new_customer(qb, "Fionnuala O'Hara")
    assert Customer.filter(DisplayName="Fionnuala O'Hara", qb=qb)[0].Id == c.Id, "apostrophes are escaped and found"
    c.CompanyName = "O'Hara Gardens"
    c = c.save(qb=qb)
    assert Customer.get(c.Id, qb=qb).CompanyName == "O'Hara Gardens" and c.SyncToken == "1"
    v = Vendor()
    v.DisplayName = "Nguyen's Irrigation Parts"
    v = v.save(qb=qb)
    dup = Vendor()
    dup.DisplayName = "Fionnuala O'Hara"
    with pytest.raises(QuickbooksException) as e:
        dup.save(qb=qb)
    assert e.value.error_code == 6240, "display names are unique across customers, vendors and employees"
    emp = Employee()
    emp.GivenName, emp.FamilyName = "Ada", "Quist"
    emp = emp.save(qb=qb)
    assert Employee.get(emp.Id, qb=qb).DisplayName == "Ada Quist"
    it = Item()
    it.Name, it.Type, it.UnitPrice, it.IncomeAccountRef = "Pond Cleaning", "Service", 150, ref(1)
    it = it.save(qb=qb)
    assert Item.filter(Name="Pond Cleaning", qb=qb)[0].UnitPrice == 150
    acct = Account()
    acct.Name, acct.AccountType = "Fuel", "Expense"
    acct = acct.save(qb=qb)
    assert Account.get(acct.Id, qb=qb).Classification == "Expense"
    term = Term()
    term.Name, term.DueDays = "Net 45", 45
    term = term.save(qb=qb)
    klass = Class()
    klass.Name = "Estates"
    klass = klass.save(qb=qb)
    dept = Department()
    dept.Name = "South Bay"
    dept = dept.save(qb=qb)
    assert {x.Name for x in Term.all(qb=qb)} >= {"Net 30", "Net 45"}
    assert any(x.Id == klass.Id for x in Class.all(qb=qb))
    assert Department.count(qb=qb) == 3
    codes = {t.Id for t in TaxCode.all(qb=qb)}
    assert {"TAX", "NON", "3"} <= codes
    assert sorted(float(r.RateValue) for r in TaxRate.all(qb=qb)) == [1.25, 7.25]
    # Deactivate instead of delete: hidden from default queries.
    klass.Active = False
    klass.save(qb=qb)
    assert all(x.Id != klass.Id for x in Class.all(qb=qb))
    prefs = Preferences.get(qb=qb)
    assert prefs.CurrencyPrefs.MultiCurrencyEnabled is False


def test_invoice_tax_partial_and_multi_invoice_payments_and_credit(qb):
    cust = new_customer(qb, "Lakeside Pavilion")
    # Mulch (item 6) is taxable: 10 × 42.00 = 420.00; tax 7.25 % = 30.45 + 1.25 % = 5.25 → 35.70.
    inv1 = invoice(qb, cust.Id, [item_line(6, 10, 42), item_line(2, 2, 95)])
    assert float(inv1.TxnTaxDetail.TotalTax) == 35.70
    assert float(inv1.TotalAmt) == 420 + 190 + 35.70
    inv2 = invoice(qb, cust.Id, [item_line(3, amount=100)])
    assert float(inv2.TotalAmt) == 100.0, "non-taxable service, no tax"
    assert float(Customer.get(cust.Id, qb=qb).Balance) == 745.70

    partial = pay(qb, cust.Id, 200, [(inv1.Id, "Invoice", 200)])
    assert float(partial.UnappliedAmt) == 0
    assert float(Invoice.get(inv1.Id, qb=qb).Balance) == 445.70
    multi = pay(qb, cust.Id, 600, [(inv1.Id, "Invoice", 445.70), (inv2.Id, "Invoice", 100)])
    assert float(multi.UnappliedAmt) == 54.30
    assert float(Invoice.get(inv1.Id, qb=qb).Balance) == 0
    assert float(Invoice.get(inv2.Id, qb=qb).Balance) == 0
    assert float(Customer.get(cust.Id, qb=qb).Balance) == -54.30, "unapplied cash is a credit on the customer"
    with pytest.raises(QuickbooksException) as e:
        pay(qb, cust.Id, 5, [(inv2.Id, "Invoice", 5)])
    assert "open balance" in e.value.detail

    memo = CreditMemo()
    memo.CustomerRef = ref(cust.Id)
    memo.Line = [item_line(3, amount=45)]
    memo = memo.save(qb=qb)
    assert float(memo.Balance) == 45
    assert float(Customer.get(cust.Id, qb=qb).Balance) == -99.30
    inv3 = invoice(qb, cust.Id, [item_line(3, amount=80)])
    used = pay(qb, cust.Id, 35, [(inv3.Id, "Invoice", 80), (memo.Id, "CreditMemo", 45)])
    assert float(used.UnappliedAmt) == 0
    assert float(Invoice.get(inv3.Id, qb=qb).Balance) == 0
    assert float(CreditMemo.get(memo.Id, qb=qb).Balance) == 0
    assert float(Customer.get(cust.Id, qb=qb).Balance) == -54.30


def test_void_and_delete_restore_balances(qb):
    cust = new_customer(qb, "Mossbrook Library")
    inv = invoice(qb, cust.Id, [item_line(3, amount=250)])
    p = pay(qb, cust.Id, 250, [(inv.Id, "Invoice", 250)])
    assert float(Invoice.get(inv.Id, qb=qb).Balance) == 0
    p.void(qb=qb)
    voided = Payment.get(p.Id, qb=qb)
    assert float(voided.TotalAmt) == 0 and voided.PrivateNote == "Voided"
    assert float(Invoice.get(inv.Id, qb=qb).Balance) == 250, "voiding the payment reopens the invoice"
    inv = Invoice.get(inv.Id, qb=qb)
    inv.void(qb=qb)
    inv = Invoice.get(inv.Id, qb=qb)
    assert float(inv.TotalAmt) == 0 and float(inv.Balance) == 0
    assert float(Customer.get(cust.Id, qb=qb).Balance) == 0
    other = invoice(qb, cust.Id, [item_line(3, amount=60)])
    p2 = pay(qb, cust.Id, 60, [(other.Id, "Invoice", 60)])
    with pytest.raises(QuickbooksException):
        Invoice.get(other.Id, qb=qb).delete(qb=qb)  # a paid invoice cannot go while the payment points at it
    Payment.get(p2.Id, qb=qb).delete(qb=qb)
    Invoice.get(other.Id, qb=qb).delete(qb=qb)
    with pytest.raises(QuickbooksException) as e:
        Invoice.get(other.Id, qb=qb)
    assert e.value.error_code == 610


def test_other_transactions(qb):
    est = Estimate()
    est.CustomerRef = ref(1)
    est.Line = [item_line(2, 4, 95)]
    est = est.save(qb=qb)
    assert est.TxnStatus == "Pending" and float(Estimate.get(est.Id, qb=qb).TotalAmt) == 380
    sr = SalesReceipt()
    sr.CustomerRef = ref(2)
    sr.Line = [item_line(3, amount=45)]
    sr = sr.save(qb=qb)
    assert float(sr.Balance) == 0 and float(sr.TotalAmt) == 45
    sr.void(qb=qb)
    assert float(SalesReceipt.get(sr.Id, qb=qb).TotalAmt) == 0

    def expense_line(account, amount):
        line = AccountBasedExpenseLine()
        line.Amount = amount
        line.AccountBasedExpenseLineDetail = AccountBasedExpenseLineDetail()
        line.AccountBasedExpenseLineDetail.AccountRef = ref(account)
        return line

    bill = Bill()
    bill.VendorRef = ref(2)
    bill.Line = [expense_line(7, 300), expense_line(12, 20.5)]
    bill = bill.save(qb=qb)
    assert float(bill.Balance) == 320.5
    vendor_before = float(Vendor.get(2, qb=qb).Balance)
    bp = BillPayment()
    bp.VendorRef = ref(2)
    bp.PayType = "Check"
    bp.TotalAmt = 320.5
    bp.CheckPayment = CheckPayment()
    bp.CheckPayment.BankAccountRef = ref(4)
    line = BillPaymentLine()
    line.Amount = 320.5
    link = LinkedTxn()
    link.TxnId, link.TxnType = bill.Id, "Bill"
    line.LinkedTxn = [link]
    bp.Line = [line]
    bp.save(qb=qb)
    assert float(Bill.get(bill.Id, qb=qb).Balance) == 0
    assert float(Vendor.get(2, qb=qb).Balance) == vendor_before - 320.5

    purchase = Purchase()
    purchase.PaymentType = "CreditCard"
    purchase.AccountRef = ref(11)
    purchase.Line = [expense_line(12, 64.99)]
    purchase = purchase.save(qb=qb)
    assert float(Purchase.get(purchase.Id, qb=qb).TotalAmt) == 64.99
    po = PurchaseOrder()
    po.VendorRef = ref(1)
    po.Line = [expense_line(7, 1200)]
    po = po.save(qb=qb)
    assert po.POStatus == "Open"

    def je_line(posting, account, amount):
        line = JournalEntryLine()
        line.Amount = amount
        line.JournalEntryLineDetail = JournalEntryLineDetail()
        line.JournalEntryLineDetail.PostingType = posting
        line.JournalEntryLineDetail.AccountRef = ref(account)
        return line

    je = JournalEntry()
    je.Line = [je_line("Debit", 4, 500), je_line("Credit", 14, 500)]
    je = je.save(qb=qb)
    assert float(je.TotalAmt) == 500
    bad = JournalEntry()
    bad.Line = [je_line("Debit", 4, 500), je_line("Credit", 14, 499.99)]
    with pytest.raises(QuickbooksException) as e:
        bad.save(qb=qb)
    assert "debits" in e.value.detail

    ta = TimeActivity()
    ta.NameOf = "Employee"
    ta.EmployeeRef = ref(1)
    ta.CustomerRef = ref(1)
    ta.Hours, ta.Minutes = 3, 30
    ta = ta.save(qb=qb)
    assert TimeActivity.get(ta.Id, qb=qb).Hours == 3
    ta.delete(qb=qb)


def test_batch_and_change_data_capture(qb):
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    people = []
    for i in range(33):
        c = Customer()
        c.DisplayName = f"Batch Customer {i:02d}"
        people.append(c)
    dup = Customer()
    dup.DisplayName = "Batch Customer 05"
    people.append(dup)
    result = batch_create(people, qb=qb)  # the library splits into batches of 30
    assert len(result.successes) == 33
    assert len(result.faults) == 1 and result.faults[0].Error[0].code == "6240"
    inv = invoice(qb, result.successes[0].Id, [item_line(3, amount=20)])
    inv.delete(qb=qb)
    cdc = change_data_capture([Customer, Invoice], since.strftime("%Y-%m-%dT%H:%M:%S%z"), qb=qb)
    names = {c.DisplayName for c in cdc.Customer}
    assert {f"Batch Customer {i:02d}" for i in range(33)} <= names
    deleted = [i for i in cdc.Invoice if getattr(i, "status", None) == "Deleted"]
    assert [d.Id for d in deleted] == [inv.Id]
    with pytest.raises(QuickbooksException):
        change_data_capture([Customer], "2001-01-01T00:00:00-07:00", qb=qb)
