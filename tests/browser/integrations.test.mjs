// Browser tests of Settings > Integrations, driven through Debian's Chromium with playwright-core.
//
// Each test starts `ledgerlink web-fixture --port 0` (a fresh store, one admin, a QuickBooks sandbox whose
// consent page Connect leads to) and reads its first stdout line for the URLs and the sign-in. Elements are found
// by role and accessible name, as a person using a screen reader would find them. Screenshots go to
// target/browser-artifacts/; the Integrations page as connected is also saved as docs/images/integrations.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.LEDGERLINK_BIN ?? join(root, 'target/debug/ledgerlink');
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const artifacts = join(root, 'target/browser-artifacts');
mkdirSync(artifacts, { recursive: true });

/** Starts the fixture and resolves with its startup line; rejects if it exits or stays silent for 60 s. */
function startFixture() {
  return new Promise((resolveStart, rejectStart) => {
    const child = spawn(bin, ['web-fixture', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => rejectStart(new Error('web-fixture printed no startup line within 60 s')), 60_000);
    child.once('exit', (code) => { clearTimeout(timer); rejectStart(new Error(`web-fixture exited early with ${code}`)); });
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolveStart({ child, info: JSON.parse(line) });
    });
  });
}

function stopFixture(child) {
  return new Promise((done) => {
    if (child.exitCode !== null) return done();
    child.once('exit', () => done());
    child.kill('SIGTERM');
  });
}

let browser;
before(async () => {
  assert.ok(existsSync(bin), `${bin} is missing: build it with cargo build -p ledgerlink`);
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: apt-get install -y chromium`);
  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});
after(async () => { await browser?.close(); });

/** A fixture and a fresh browser context for one test; both closed afterwards. */
async function withApp(t, fn) {
  const { child, info } = await startFixture();
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  try {
    await fn(page, info);
  } catch (e) {
    await page.screenshot({ path: join(artifacts, `${t.name.replace(/\W+/g, '-')}-failure.png`), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await context.close();
    await stopFixture(child);
  }
}

async function signIn(page, info) {
  await page.goto(`${info.url}/settings/integrations`);
  // Not signed in: the sign-in page, which brings us back afterwards.
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('Email').fill(info.email);
  await page.getByLabel('Password').fill(info.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Integrations' }).waitFor();
}

/** From the Integrations page through QuickBooks' consent pages; returns the chosen company's name. */
async function connectQuickbooks(page, info, { approve = true, pickSecond = true } = {}) {
  const card = page.getByRole('region', { name: 'QuickBooks' });
  await card.getByRole('button', { name: 'Connect' }).click();
  // The sandbox's sign-in page (a different origin).
  await page.getByRole('heading', { name: 'Sign in to Intuit' }).waitFor();
  assert.ok(page.url().startsWith(info.quickbooks_url), `expected the QuickBooks sign-in page, got ${page.url()}`);
  await page.getByLabel('Password').fill(info.sandbox_password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Choose a company' }).waitFor();
  const companies = page.getByRole('radio');
  assert.ok((await companies.count()) >= 2, 'the sandbox user has several companies to pick from');
  const choice = companies.nth(pickSecond ? 1 : 0);
  await choice.check();
  // The radio sits inside its label: "Company name (realm 9341…)".
  const label = (await choice.locator('xpath=..').innerText()).trim();
  const company = label.replace(/\s*\(realm \d+\)\s*$/, '');
  const realm = await choice.getAttribute('value');
  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByRole('heading', { name: 'Approve access' }).waitFor();
  await page.getByRole('button', { name: approve ? 'Connect' : 'Cancel' }).click();
  return { company, realm };
}

/** Calls the platform push API as the host platform would (bearer token of the workspace). */
async function api(info, method, path, body) {
  const reply = await fetch(`${info.url}/api/v1/platform${path}`, {
    method,
    headers: { authorization: `Bearer ${info.api_token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await reply.text();
  assert.ok(reply.ok, `${method} ${path} answered ${reply.status}: ${text}`);
  return JSON.parse(text);
}

/** Polls `check` until it returns a value, failing after `seconds` with `what`. */
async function eventually(seconds, what, check) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The sandbox's own view of one company's entities (its admin API, not ours). */
async function quickbooksState(info, realm) {
  const reply = await fetch(`${info.quickbooks_url}/sandbox/admin/state?realm=${realm}`);
  assert.equal(reply.status, 200);
  return (await reply.json()).entities;
}

test('connect QuickBooks, set what syncs, test, push an invoice, see it paid, disconnect', async (t) => {
  await withApp(t, async (page, info) => {
    await signIn(page, info);
    const card = page.getByRole('region', { name: 'QuickBooks' });
    await assert.doesNotReject(card.getByText('Not connected', { exact: true }).waitFor());
    await page.screenshot({ path: join(artifacts, '01-integrations-not-connected.png'), fullPage: true });

    const { company, realm } = await connectQuickbooks(page, info);
    await page.getByRole('heading', { name: 'Integrations' }).waitFor();
    assert.ok(page.url().startsWith(info.url), 'back on the platform');
    await card.getByText('Connected', { exact: true }).waitFor();
    assert.equal((await card.locator('.company').innerText()).trim(), company, 'the card names the company picked');
    await page.getByRole('status').filter({ hasText: `QuickBooks is connected to ${company}.` }).waitFor();
    await page.screenshot({ path: join(artifacts, '02-integrations-connected.png'), fullPage: true });
    // The README's screenshot is taken again only when asked, so a test run leaves the work tree as it found it:
    // LEDGERLINK_REFRESH_DOCS_IMAGES=1 ./scripts/test
    if (process.env.LEDGERLINK_REFRESH_DOCS_IMAGES === '1') {
      mkdirSync(join(root, 'docs/images'), { recursive: true });
      await page.screenshot({ path: join(root, 'docs/images/integrations.png') });
    }

    await card.getByRole('link', { name: 'Manage' }).click();
    await page.getByRole('heading', { name: 'QuickBooks settings' }).waitFor();
    // What syncs: choices from the connected company's own lists.
    await page.getByLabel('Match existing customers by email, then by name').check();
    await page.getByLabel('Push new invoices to QuickBooks automatically').check();
    await page.getByLabel('Income account').selectOption({ label: 'Services (Income)' });
    await page.getByLabel('As bills (to pay later)').check();
    await page.getByLabel('Background reconciliation every (minutes)').fill('30');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await page.getByRole('status').filter({ hasText: 'Settings saved.' }).waitFor();
    assert.equal(await page.getByLabel('Background reconciliation every (minutes)').inputValue(), '30');
    await page.screenshot({ path: join(artifacts, '03-manage-saved.png'), fullPage: true });
    await page.getByRole('button', { name: 'Test Connection' }).click();
    const result = page.getByRole('status', { name: 'Test result' });
    await result.waitFor();
    const text = await result.innerText();
    assert.match(text, /The connection works/);
    assert.match(text, new RegExp(`company “${company.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}”`));
    assert.match(text, /QuickBooks accepted the sign-in/);
    await page.screenshot({ path: join(artifacts, '04-test-connection.png'), fullPage: true });

    // The platform pushes a client, a service and an invoice through its API, as it would on save.
    await api(info, 'POST', '/clients', { id: 'cl-1', name: 'Northwind Garden Co', email: 'billing@northwind.example' });
    await api(info, 'POST', '/services', { id: 'svc-design', name: 'Garden design', unit_price: '95.00' });
    await api(info, 'POST', '/invoices', {
      id: 'inv-1001', number: 'P-1001', client_id: 'cl-1', currency: 'USD', issue_date: '2026-11-02', due_date: '2026-12-02',
      lines: [{ service_id: 'svc-design', quantity: '3', unit_price: '95.00', description: 'Design sessions' }],
    });
    const synced = await eventually(30, 'the invoice to reach QuickBooks', async () => {
      const r = await api(info, 'GET', '/invoices/inv-1001');
      return r.sync.status === 'synced' ? r : null;
    });
    // In QuickBooks itself (the company picked on the consent page): the invoice, its customer and total.
    const qb = await quickbooksState(info, realm);
    const invoice = qb.Invoice.find((i) => i.Id === synced.sync.quickbooks_id);
    assert.ok(invoice, 'the invoice is in the QuickBooks company that was connected');
    assert.equal(invoice.DocNumber, 'P-1001');
    assert.equal(String(invoice.TotalAmt), '285');
    const customer = qb.Customer.find((c) => c.Id === invoice.CustomerRef.value);
    assert.equal(customer.DisplayName, 'Northwind Garden Co');

    await page.getByRole('link', { name: 'Invoices' }).click();
    const row = page.getByRole('row', { name: 'Invoice inv-1001' });
    await row.getByText('In QuickBooks').waitFor();
    await row.getByText('Unpaid').waitFor();
    await page.screenshot({ path: join(artifacts, '05-invoice-in-quickbooks.png'), fullPage: true });

    // The finance team records the payment in QuickBooks.
    const paid = await fetch(`${info.quickbooks_url}/sandbox/admin/seed`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ realm, objects: [{ Payment: {
        CustomerRef: invoice.CustomerRef, TotalAmt: 285, TxnDate: '2026-11-20',
        Line: [{ Amount: 285, LinkedTxn: [{ TxnId: invoice.Id, TxnType: 'Invoice' }] }],
      } }] }),
    });
    assert.equal(paid.status, 200, await paid.text());
    // The platform UI shows it paid once payment status has flowed back (QuickBooks' notification; the fixture's
    // payment poll runs only every five minutes).
    await eventually(30, 'the invoice to show as paid', async () => {
      await page.reload();
      return (await row.getByText('Paid 285').count()) > 0;
    });
    assert.match(await row.innerText(), /Paid 285.00 USD on 2026-11-20/);
    await page.screenshot({ path: join(artifacts, '06-invoice-paid.png'), fullPage: true });

    await page.getByRole('link', { name: 'Integrations' }).click();
    await card.getByRole('link', { name: 'Manage' }).click();
    await page.getByRole('link', { name: 'Disconnect' }).click();
    await page.getByRole('heading', { name: 'Disconnect QuickBooks?' }).waitFor();
    await page.getByText('Data already pushed to QuickBooks stays there.').waitFor();
    await page.getByText('Data already pulled from QuickBooks stays here.').waitFor();
    await page.screenshot({ path: join(artifacts, '07-disconnect-confirm.png'), fullPage: true });
    await page.getByRole('button', { name: 'Yes, disconnect' }).click();
    await page.getByRole('heading', { name: 'Integrations' }).waitFor();
    await card.getByText('Not connected', { exact: true }).waitFor();
    await page.getByRole('status').filter({ hasText: 'QuickBooks is disconnected and its access revoked.' }).waitFor();
    await card.getByRole('button', { name: 'Connect' }).waitFor();
    await page.screenshot({ path: join(artifacts, '08-disconnected.png'), fullPage: true });
    // QuickBooks itself recorded the revocation of that company's grant.
    const revocations = await (await fetch(`${info.quickbooks_url}/sandbox/admin/revocations`)).json();
    assert.equal(revocations.length, 1);
    assert.equal(revocations[0].realm_id, realm);
  });
});

test('a refused sign-in and a forged callback say why, and connect nothing', async (t) => {
  await withApp(t, async (page, info) => {
    await signIn(page, info);
    await connectQuickbooks(page, info, { approve: false });
    await page.getByRole('heading', { name: 'QuickBooks was not connected' }).waitFor();
    assert.match(await page.getByRole('alert').innerText(), /You cancelled on the QuickBooks page/);
    await page.screenshot({ path: join(artifacts, '05-sign-in-cancelled.png'), fullPage: true });

    // A callback whose state this session never issued (what a forged link looks like).
    await page.goto(`${info.url}/oauth/quickbooks/callback?code=abc&state=forged&realmId=${info.realm_id}`);
    await page.getByRole('heading', { name: 'QuickBooks was not connected' }).waitFor();
    assert.match(await page.getByRole('alert').innerText(), /not started from this browser session|does not belong/);

    await page.getByRole('link', { name: 'Go back' }).click();
    await page.getByRole('region', { name: 'QuickBooks' }).getByText('Not connected', { exact: true }).waitFor();
  });
});

test('forms without the session CSRF token are refused and change nothing', async (t) => {
  await withApp(t, async (page, info) => {
    await signIn(page, info);
    // The browser's own cookies, but no token: what a cross-site form would send.
    const reply = await page.request.post(`${info.url}/settings/integrations/quickbooks/connect`, { form: { csrf: 'wrong' }, maxRedirects: 0 });
    assert.equal(reply.status(), 403);
    assert.match(await reply.text(), /This form has expired/);
    await page.goto(`${info.url}/settings/integrations`);
    await page.getByRole('region', { name: 'QuickBooks' }).getByText('Not connected', { exact: true }).waitFor();
  });
});
