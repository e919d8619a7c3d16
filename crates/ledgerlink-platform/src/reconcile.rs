//! The reconciliation pass the help page asks for before automatic push is switched on: platform clients against
//! QuickBooks customers, services against products/services. Each platform record is matched (linked already,
//! same email, or same normalised name), near-matched (similar names, with the score), or missing; the admin
//! confirms choices, which are stored as links, the same links the sync uses, so a confirmed customer is the one
//! invoices go to.

use ledgerlink_connectors::{FindQuery, Record};
use ledgerlink_engine::matching::{normalize_name, similarity};
use ledgerlink_model::RecordRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::records::{Client, RecordKind, Service, SyncState, SyncStatus};
use crate::sync::platform_connection;
use crate::{Platform, PlatformError, Result};

/// Names at least this similar (Jaro-Winkler on normalised names) are offered as near-matches.
pub const NEAR_MATCH: f64 = 0.85;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub quickbooks_id: String,
    pub name: String,
    pub email: Option<String>,
    /// 0.0–1.0.
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchState {
    /// Linked already (synced or confirmed).
    Linked,
    /// One QuickBooks record with the same email or normalised name.
    Matched,
    /// Similar names only: the admin should confirm one.
    NearMatch,
    /// Nothing alike in QuickBooks: it will be created (clients, and services when an income account is set).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRow {
    pub platform_id: String,
    pub platform_name: String,
    pub state: MatchState,
    /// Best first. For `linked` and `matched`, the first is the one.
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub clients: Vec<MatchRow>,
    pub services: Vec<MatchRow>,
    /// QuickBooks customers no platform client is linked or matched to.
    pub unmatched_customers: Vec<Candidate>,
}

/// An admin's choice for one platform record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchDecision {
    pub kind: RecordKind,
    pub platform_id: String,
    /// The QuickBooks customer/item to link it to.
    pub quickbooks_id: String,
}

fn text(r: &Record, field: &str) -> String {
    r.get(field).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn email(r: &Record) -> Option<String> {
    r.get("PrimaryEmailAddr").and_then(|e| e.get("Address")).and_then(Value::as_str).map(str::to_string)
}

fn rows(
    platform: Vec<(String, String, Option<String>)>,
    qb: &[Record],
    name_field: &str,
    linked: &dyn Fn(&str) -> Option<String>,
) -> Vec<MatchRow> {
    platform
        .into_iter()
        .map(|(id, name, mail)| {
            let cand = |r: &Record, score: f64| Candidate { quickbooks_id: text(r, "Id"), name: text(r, name_field), email: email(r), score };
            if let Some(qid) = linked(&id) {
                let c = qb.iter().find(|r| text(r, "Id") == qid).map(|r| cand(r, 1.0)).unwrap_or(Candidate {
                    quickbooks_id: qid,
                    name: String::new(),
                    email: None,
                    score: 1.0,
                });
                return MatchRow { platform_id: id, platform_name: name, state: MatchState::Linked, candidates: vec![c] };
            }
            let exact: Vec<Candidate> = qb
                .iter()
                .filter(|r| {
                    mail.as_ref().is_some_and(|m| email(r).is_some_and(|e| e.eq_ignore_ascii_case(m)))
                        || normalize_name(&text(r, name_field)) == normalize_name(&name)
                })
                .map(|r| cand(r, 1.0))
                .collect();
            if exact.len() == 1 {
                return MatchRow { platform_id: id, platform_name: name, state: MatchState::Matched, candidates: exact };
            }
            let mut near: Vec<Candidate> = if exact.len() > 1 {
                exact
            } else {
                qb.iter()
                    .map(|r| cand(r, similarity(&name, &text(r, name_field))))
                    .filter(|c| c.score >= NEAR_MATCH)
                    .collect()
            };
            near.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
            near.truncate(5);
            let state = if near.is_empty() { MatchState::Missing } else { MatchState::NearMatch };
            MatchRow { platform_id: id, platform_name: name, state, candidates: near }
        })
        .collect()
}

impl Platform {
    /// Compares the workspace's clients and services with the connected company's customers and items.
    pub async fn reconciliation(&self, workspace_id: &str) -> Result<Reconciliation> {
        let (qb, connection) = self.connector(workspace_id).await?;
        let all = |object: &str| FindQuery { object: object.into(), ..Default::default() };
        let customers: Vec<Record> =
            qb.find(&all("Customer")).await?.into_iter().filter(|c| c.get("Active").and_then(Value::as_bool) != Some(false)).collect();
        let items: Vec<Record> = qb
            .find(&all("Item"))
            .await?
            .into_iter()
            .filter(|i| i.get("Active").and_then(Value::as_bool) != Some(false) && text(i, "Type") != "Category")
            .collect();
        let platform = platform_connection(workspace_id);
        let mut links = std::collections::BTreeMap::new();
        for (kind, object) in [("client", "Customer"), ("service", "Item")] {
            for l in self.store.list_links(&platform, kind).await? {
                let (p, q) = if l.a.connection == platform { (&l.a, &l.b) } else { (&l.b, &l.a) };
                if q.connection == connection && q.object == object {
                    links.insert((kind, p.id.clone()), q.id.clone());
                }
            }
        }
        let settings = self.load_settings(workspace_id).await?;
        let clients: Vec<(String, String, Option<String>)> = self
            .list_records(workspace_id, RecordKind::Client)
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_value::<Client>(r.data).ok())
            .map(|c| (c.id, c.name, c.email))
            .collect();
        let services: Vec<(String, String, Option<String>)> = self
            .list_records(workspace_id, RecordKind::Service)
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_value::<Service>(r.data).ok())
            .map(|s| (s.id, s.name, None))
            .collect();
        let client_rows = rows(clients, &customers, "DisplayName", &|id| links.get(&("client", id.to_string())).cloned());
        let service_rows = rows(services, &items, "Name", &|id| {
            settings.invoices.service_items.get(id).map(|r| r.id.clone()).or_else(|| links.get(&("service", id.to_string())).cloned())
        });
        let taken: std::collections::BTreeSet<String> = client_rows
            .iter()
            .filter(|r| matches!(r.state, MatchState::Linked | MatchState::Matched))
            .flat_map(|r| r.candidates.first().map(|c| c.quickbooks_id.clone()))
            .collect();
        let unmatched_customers = customers
            .iter()
            .filter(|c| !taken.contains(&text(c, "Id")))
            .map(|c| Candidate { quickbooks_id: text(c, "Id"), name: text(c, "DisplayName"), email: email(c), score: 0.0 })
            .collect();
        Ok(Reconciliation { clients: client_rows, services: service_rows, unmatched_customers })
    }

    /// Stores the admin's choices as links (replacing earlier ones for the same record). Each QuickBooks id must
    /// exist in the connected company.
    pub async fn confirm(&self, workspace_id: &str, decisions: &[MatchDecision]) -> Result<usize> {
        let (qb, connection) = self.connector(workspace_id).await?;
        for d in decisions {
            let object = match d.kind {
                RecordKind::Client => "Customer",
                RecordKind::Service => "Item",
                other => return Err(PlatformError::invalid("kind", format!("only clients and services are reconciled, not {}", other.as_str()))),
            };
            self.get_record(workspace_id, d.kind, &d.platform_id).await?;
            if qb.get(object, &d.quickbooks_id, &[]).await?.is_none() {
                return Err(PlatformError::invalid("quickbooks_id", format!("QuickBooks has no {object} {}", d.quickbooks_id)));
            }
            let source = RecordRef::new(platform_connection(workspace_id), d.kind.as_str(), d.platform_id.clone());
            self.put_link(&source, &RecordRef::new(connection.clone(), object, d.quickbooks_id.clone())).await?;
            // A record that waited for this decision (or failed for want of it) syncs now.
            let rec = self.get_record(workspace_id, d.kind, &d.platform_id).await?;
            if matches!(rec.sync.status, SyncStatus::NeedsReview | SyncStatus::Failed) {
                self.modify_record(workspace_id, d.kind, &d.platform_id, |r| {
                    r.sync = SyncState { status: SyncStatus::Pending, error: None, ..r.sync.clone() };
                })
                .await?;
                let key_suffix = crate::now().timestamp_millis();
                self.queue_sync_again(workspace_id, d.kind, &d.platform_id, rec.version, key_suffix).await?;
            }
        }
        Ok(decisions.len())
    }
}
