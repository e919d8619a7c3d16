//! SOQL that pins `Id` or a lookup field (`AccountId IN (…)`) reads its candidates from the id map and the org's
//! lookup index instead of scanning; these tests hold it to a scan's answers across every kind of write:
//! creation, reparenting, deletion, all-or-none rollbacks of both kinds, admin reset, custom fields and a restart
//! from the state file. Every query is asked twice, once as written and once with `OR Id = null` added at the top
//! (a condition no row meets, but one that leaves nothing to narrow on), and both must give the expected ids.

use ledgerlink_sandbox::salesforce::SalesforceOptions;
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

mod support;
use support::Org;

impl Org {
    async fn create(&self, object: &str, body: Value) -> String {
        let (status, out) = self
            .send(Method::POST, &format!("/sobjects/{object}"), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{object}: {out}");
        out["id"].as_str().unwrap().to_string()
    }

    async fn update(&self, object: &str, id: &str, body: Value) {
        let (status, out) = self
            .send(
                Method::PATCH,
                &format!("/sobjects/{object}/{id}"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{object} {id}: {out}");
    }

    async fn delete(&self, object: &str, id: &str) {
        let (status, out) = self
            .send(Method::DELETE, &format!("/sobjects/{object}/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{object} {id}: {out}");
    }

    /// The rows of a query, every page (`queryAll` when `all_rows`).
    async fn rows(&self, soql: &str, all_rows: bool) -> Vec<Value> {
        let resource = if all_rows { "queryAll" } else { "query" };
        let (status, body) = self
            .send(
                Method::GET,
                &format!("/{resource}?q={}", urlencoding::encode(soql)),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{soql}: {body}");
        assert_eq!(body["done"], true, "{soql}");
        body["records"].as_array().unwrap().clone()
    }

    /// Runs `SELECT {select} FROM {object} WHERE {filter} {tail}` as written and with nothing to narrow on, checks
    /// that both answer the same rows, and returns them.
    async fn both_ways(
        &self,
        select: &str,
        object: &str,
        filter: &str,
        tail: &str,
        all_rows: bool,
    ) -> Vec<Value> {
        let pinned = format!("SELECT {select} FROM {object} WHERE {filter} {tail}");
        let scanned = format!("SELECT {select} FROM {object} WHERE ({filter}) OR Id = null {tail}");
        let rows = self.rows(&pinned, all_rows).await;
        assert_eq!(rows, self.rows(&scanned, all_rows).await, "{pinned}");
        rows
    }

    /// The ids a filter selects on an object, in the order the query returns them.
    async fn ids(&self, object: &str, filter: &str) -> Vec<String> {
        ids_of(&self.both_ways("Id", object, filter, "", false).await)
    }

    async fn ids_all_rows(&self, object: &str, filter: &str) -> Vec<String> {
        ids_of(&self.both_ways("Id", object, filter, "", true).await)
    }

    /// Each listed account's contacts through the `Contacts` child subquery (none: an empty list).
    async fn contacts_of(&self, accounts: &[&str], all_rows: bool) -> Vec<(String, Vec<String>)> {
        let filter = format!("Id IN ({})", quoted(accounts));
        let rows = self
            .both_ways(
                "Id, (SELECT Id FROM Contacts)",
                "Account",
                &filter,
                "",
                all_rows,
            )
            .await;
        rows.iter()
            .map(|r| {
                let children = match r["Contacts"]["records"].as_array() {
                    Some(list) => ids_of(list),
                    None => Vec::new(),
                };
                (r["Id"].as_str().unwrap().to_string(), children)
            })
            .collect()
    }

    async fn amount(&self, opp: &str) -> Decimal {
        let (_, rec) = self
            .send(Method::GET, &format!("/sobjects/Opportunity/{opp}"), None)
            .await;
        rec["Amount"].to_string().parse().unwrap()
    }
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect()
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn pinned_queries_answer_like_a_scan_across_every_write() {
    let org = Org::start(SalesforceOptions::default()).await;
    let a = org.create("Account", json!({"Name": "Lookup A"})).await;
    let b = org.create("Account", json!({"Name": "Lookup B"})).await;
    let c = org.create("Account", json!({"Name": "Lookup C"})).await;
    // Interleaved, so creation order is not grouped by account.
    let contact = |last: &'static str, account: Option<&String>| {
        let body = json!({"LastName": last, "AccountId": account});
        let org = &org;
        async move { org.create("Contact", body).await }
    };
    let c1 = contact("One", Some(&a)).await;
    let c2 = contact("Two", Some(&b)).await;
    let c3 = contact("Three", Some(&a)).await;
    let c4 = contact("Four", Some(&a)).await;
    let c5 = contact("Five", Some(&b)).await;
    let c6 = contact("Six", None).await;
    let mine = format!(
        "Id IN ({})",
        quoted(&[&c1, &c2, &c3, &c4, &c5, &c6].map(String::as_str))
    );

    // Id: 18 characters, 15, case-folded; a list with repeats, another object's id and an unknown id.
    assert_eq!(
        org.ids("Contact", &format!("Id = '{c3}'")).await,
        [c3.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("Id = '{}'", &c3[..15])).await,
        [c3.as_str()]
    );
    let folded = c3.to_lowercase();
    assert_eq!(
        org.ids("Contact", &format!("Id = '{folded}'")).await,
        [c3.as_str()]
    );
    let list = format!(
        "Id IN ('{c4}', '{c1}', '{}', '{c4}', '{a}', '003Hs0zzzzzzzzzAAA')",
        &c2[..15]
    );
    assert_eq!(
        org.ids("Contact", &list).await,
        [c1.as_str(), c2.as_str(), c4.as_str()]
    );
    assert!(org.ids("Account", &format!("Id = '{c1}'")).await.is_empty());

    // A lookup: =, IN with repeats, a 15-character id and null, an account without contacts, more conjuncts.
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c1.as_str(), c3.as_str(), c4.as_str()]
    );
    let a15 = &a[..15];
    assert_eq!(
        org.ids(
            "Contact",
            &format!("AccountId IN ('{b}', '{a15}', '{a}', null)")
        )
        .await,
        [
            c1.as_str(),
            c2.as_str(),
            c3.as_str(),
            c4.as_str(),
            c5.as_str()
        ]
    );
    assert!(
        org.ids("Contact", &format!("AccountId = '{c}'"))
            .await
            .is_empty()
    );
    assert_eq!(
        org.ids(
            "Contact",
            &format!("AccountId IN ('{a}', '{b}') AND LastName LIKE 'T%'")
        )
        .await,
        [c2.as_str(), c3.as_str()]
    );
    assert_eq!(
        org.ids(
            "Contact",
            &format!("Id IN ('{c1}', '{c2}') AND AccountId = '{b}'")
        )
        .await,
        [c2.as_str()]
    );
    // Nothing to narrow on: NOT IN, !=, = null, OR at the top, a lookup reached through a relationship.
    assert_eq!(
        org.ids("Contact", &format!("AccountId NOT IN ('{a}') AND {mine}"))
            .await,
        [c2.as_str(), c5.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId != '{b}' AND {mine}"))
            .await,
        [c1.as_str(), c3.as_str(), c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = null AND {mine}"))
            .await,
        [c6.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}' OR Id = '{c5}'"))
            .await,
        [c1.as_str(), c3.as_str(), c4.as_str(), c5.as_str()]
    );
    assert_eq!(
        org.ids("Contact", "Account.Name IN ('Lookup B', 'lookup c')")
            .await,
        [c2.as_str(), c5.as_str()]
    );
    assert_eq!(
        org.contacts_of(&[a.as_str(), b.as_str(), c.as_str()], false)
            .await,
        [
            (a.clone(), vec![c1.clone(), c3.clone(), c4.clone()]),
            (b.clone(), vec![c2.clone(), c5.clone()]),
            (c.clone(), vec![]),
        ]
    );

    // Reparenting moves a contact between accounts (and to and from none); a stale index would miss it.
    org.update("Contact", &c1, json!({"AccountId": b})).await;
    org.update("Contact", &c6, json!({"AccountId": a})).await;
    org.update("Contact", &c5, json!({"AccountId": null})).await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c3.as_str(), c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{b}'")).await,
        [c1.as_str(), c2.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = null AND {mine}"))
            .await,
        [c5.as_str()]
    );
    org.update("Contact", &c5, json!({"AccountId": b})).await;
    assert_eq!(
        org.contacts_of(&[a.as_str(), b.as_str()], false).await,
        [
            (a.clone(), vec![c3.clone(), c4.clone(), c6.clone()]),
            (b.clone(), vec![c1.clone(), c2.clone(), c5.clone()]),
        ]
    );

    // A deleted contact leaves the query and the subquery but not queryAll.
    org.delete("Contact", &c3).await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids_all_rows("Contact", &format!("AccountId = '{a}'"))
            .await,
        [c3.as_str(), c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids_all_rows("Contact", &format!("Id = '{c3}' AND IsDeleted = true"))
            .await,
        [c3.as_str()]
    );
    assert_eq!(
        org.contacts_of(&[a.as_str()], true).await,
        [(a.clone(), vec![c3.clone(), c4.clone(), c6.clone()])]
    );

    // Collections with allOrNone: a failing record undoes the delete (the contact comes back), the reparenting and
    // the creation that went before it.
    let (_, out) = org
        .send(
            Method::DELETE,
            &format!("/composite/sobjects?ids={c4},003Hs0zzzzzzzzzAAA&allOrNone=true"),
            None,
        )
        .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "{out}"
    );
    let (_, out) = org
        .send(
            Method::PATCH,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Contact"}, "id": c2, "AccountId": a},
                {"attributes": {"type": "Contact"}, "id": c5, "Email": "not-an-email"},
            ]})),
        )
        .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "{out}"
    );
    let (_, out) = org
        .send(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Contact"}, "LastName": "Undone", "AccountId": a},
                {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
            ]})),
        )
        .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "{out}"
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{b}'")).await,
        [c1.as_str(), c2.as_str(), c5.as_str()]
    );
    assert!(org.ids("Contact", "LastName = 'Undone'").await.is_empty());

    // Without allOrNone the records that succeeded stand.
    let (_, out) = org
        .send(
            Method::PATCH,
            "/composite/sobjects",
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Contact"}, "id": c2, "AccountId": c},
                {"attributes": {"type": "Contact"}, "id": c5, "Email": "not-an-email"},
            ]})),
        )
        .await;
    assert_eq!(out[0]["success"], true, "{out}");
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{c}'")).await,
        [c2.as_str()]
    );

    // Composite with allOrNone: the reparenting and the deletion before the failing subrequest are undone.
    let (_, out) = org
        .send(
            Method::POST,
            "/composite",
            Some(json!({"allOrNone": true, "compositeRequest": [
                {"method": "PATCH", "url": format!("/services/data/v59.0/sobjects/Contact/{c2}"), "referenceId": "move",
                 "body": {"AccountId": a}},
                {"method": "DELETE", "url": format!("/services/data/v59.0/sobjects/Contact/{c4}"), "referenceId": "drop"},
                {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "bad",
                 "body": {"FirstName": "No last name"}},
            ]})),
        )
        .await;
    assert_eq!(
        out["compositeResponse"][2]["body"][0]["errorCode"], "REQUIRED_FIELD_MISSING",
        "{out}"
    );
    assert_eq!(
        org.ids("Contact", &format!("AccountId IN ('{a}', '{c}')"))
            .await,
        [c2.as_str(), c4.as_str(), c6.as_str()]
    );
    assert_eq!(
        org.contacts_of(&[a.as_str(), b.as_str(), c.as_str()], false)
            .await,
        [
            (a.clone(), vec![c4.clone(), c6.clone()]),
            (b.clone(), vec![c1.clone(), c5.clone()]),
            (c.clone(), vec![c2.clone()]),
        ]
    );
    org.sb.stop().await;
}

#[tokio::test]
async fn line_item_lookups_and_the_opportunity_total_follow_writes_and_rollbacks() {
    let org = Org::start(SalesforceOptions::default()).await;
    let entries = ids_of(
        &org.rows(
            "SELECT Id FROM PricebookEntry WHERE Pricebook2.IsStandard = true AND Product2.ProductCode IN ('LIC-SYNC', 'SVC-HOUR') ORDER BY Product2.ProductCode",
            false,
        )
        .await,
    );
    let (sync, hour) = (&entries[0], &entries[1]);
    let opp = |name: &'static str| {
        let org = &org;
        async move {
            org.create(
                "Opportunity",
                json!({"Name": name, "StageName": "Prospecting", "CloseDate": "2030-03-31"}),
            )
            .await
        }
    };
    let (o1, o2, o3) = (
        opp("Lines One").await,
        opp("Lines Two").await,
        opp("Lines Three").await,
    );
    let line = |opp: &String, entry: &String, quantity: u32| {
        let body = json!({"OpportunityId": opp, "PricebookEntryId": entry, "Quantity": quantity, "UnitPrice": 10});
        let org = &org;
        async move { org.create("OpportunityLineItem", body).await }
    };
    let l1 = line(&o1, sync, 1).await;
    let l2 = line(&o2, sync, 2).await;
    let l3 = line(&o1, hour, 3).await;
    let l4 = line(&o3, hour, 4).await;
    assert_eq!(org.amount(&o1).await, Decimal::from(40));

    let filter = format!("OpportunityId IN ('{o1}', '{o2}', '{o1}', '{}')", &o2[..15]);
    assert_eq!(
        org.ids("OpportunityLineItem", &filter).await,
        [l1.as_str(), l2.as_str(), l3.as_str()]
    );
    assert_eq!(
        org.ids(
            "OpportunityLineItem",
            &format!("PricebookEntryId = '{hour}' AND OpportunityId IN ('{o1}', '{o3}')")
        )
        .await,
        [l3.as_str(), l4.as_str()]
    );
    let rows = org
        .both_ways(
            "Id, (SELECT Id, Quantity FROM OpportunityLineItems ORDER BY Quantity DESC)",
            "Opportunity",
            &format!("Id IN ('{o3}', '{o1}')"),
            "ORDER BY Name",
            false,
        )
        .await;
    let children: Vec<Vec<String>> = rows
        .iter()
        .map(|r| ids_of(r["OpportunityLineItems"]["records"].as_array().unwrap()))
        .collect();
    assert_eq!(children, [vec![l3.clone(), l1.clone()], vec![l4.clone()]]);

    // Deleting a line re-totals its opportunity from the lines that are left.
    org.delete("OpportunityLineItem", &l3).await;
    assert_eq!(org.amount(&o1).await, Decimal::from(10));
    assert_eq!(
        org.ids("OpportunityLineItem", &filter).await,
        [l1.as_str(), l2.as_str()]
    );

    // A line created in a rolled-back call leaves neither a row nor a total behind.
    let (_, out) = org
        .send(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "OpportunityLineItem"}, "OpportunityId": o1, "PricebookEntryId": hour, "Quantity": 5, "UnitPrice": 10},
                {"attributes": {"type": "OpportunityLineItem"}, "OpportunityId": o1, "Quantity": 1},
            ]})),
        )
        .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "{out}"
    );
    assert_eq!(org.amount(&o1).await, Decimal::from(10));
    assert_eq!(
        org.ids("OpportunityLineItem", &filter).await,
        [l1.as_str(), l2.as_str()]
    );

    // Deleting the opportunity takes its lines with it.
    org.delete("Opportunity", &o1).await;
    assert_eq!(org.ids("OpportunityLineItem", &filter).await, [l2.as_str()]);
    assert_eq!(
        org.ids_all_rows("OpportunityLineItem", &format!("OpportunityId = '{o1}'"))
            .await,
        [l1.as_str(), l3.as_str()]
    );
    org.sb.stop().await;
}

#[tokio::test]
async fn the_index_is_rebuilt_after_a_reset_a_new_field_and_a_restart() {
    let dir = std::env::temp_dir().join(format!("ledgerlink-sf-lookups-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("salesforce.json");
    let opts = || SalesforceOptions {
        state_file: Some(file.clone()),
        ..Default::default()
    };
    let org = Org::start(opts()).await;
    let old = org.create("Account", json!({"Name": "Before Reset"})).await;
    org.create("Contact", json!({"LastName": "Gone", "AccountId": old}))
        .await;
    let resp = org
        .http
        .post(format!("{}/sandbox/admin/reset", org.sb.base_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // Ids start again from the same counter after a reset, so the old account's id may name a new record; only
    // the contacts created now may answer.
    let a = org.create("Account", json!({"Name": "After Reset"})).await;
    let c1 = org
        .create("Contact", json!({"LastName": "Kept", "AccountId": a}))
        .await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c1.as_str()]
    );
    assert!(org.ids("Contact", "LastName = 'Gone'").await.is_empty());

    let resp = org
        .http
        .post(format!("{}/sandbox/admin/fields", org.sb.base_url))
        .json(&json!({"object": "Contact", "name": "Region__c", "type": "Text"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let c2 = org
        .create(
            "Contact",
            json!({"LastName": "Regional", "AccountId": a, "Region__c": "EMEA"}),
        )
        .await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c1.as_str(), c2.as_str()]
    );
    assert_eq!(
        org.ids(
            "Contact",
            &format!("AccountId = '{a}' AND Region__c IN ('emea', 'APAC')")
        )
        .await,
        [c2.as_str()]
    );
    org.sb.stop().await;

    let org = Org::start(opts()).await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c1.as_str(), c2.as_str()]
    );
    org.update("Contact", &c1, json!({"AccountId": null})).await;
    assert_eq!(
        org.ids("Contact", &format!("AccountId = '{a}'")).await,
        [c2.as_str()]
    );
    org.sb.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
