//! QuickBooks' change notifications (webhooks) for the connected companies, so a payment reaches the platform's
//! record and its outgoing webhook within seconds instead of at the next payment poll.
//!
//! Intuit sends one app's notifications to one URL, for every company connected through the app, signed with the
//! app's verifier token (`intuit-signature`). Verification and parsing are the connector's, the same the engine's
//! webhook endpoint uses. The signature is checked with the verifier token stored with the workspaces connected
//! to the companies named in the body; a body no connected workspace can vouch for is refused and queues
//! nothing. For each workspace with a Payment or Invoice event, one durable `payments.read` task is queued before
//! the answer (keyed by the delivery, so Intuit's re-deliveries queue nothing new); the task reads the changes
//! exactly as the poll does, and the poll stays as the backstop for notifications that never come.

use std::collections::BTreeSet;

use ledgerlink_connectors::quickbooks::webhook;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{ConnectionState, Platform, now};

/// The task that reads a workspace's payment changes now.
pub const TASK_PAYMENTS: &str = "payments.read";

/// The entities whose changes can move an invoice's payment state.
const PAYMENT_ENTITIES: [&str; 2] = ["Payment", "Invoice"];

#[derive(Debug, thiserror::Error)]
pub enum NotificationRejection {
    #[error("the intuit-signature header is missing or does not match the body")]
    BadSignature,
    #[error("{0}")]
    BadPayload(String),
    #[error("could not queue the payment reads: {0}")]
    Store(String),
}

/// What a verified delivery led to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationsAccepted {
    pub events: usize,
    /// Workspaces whose payments will be read now.
    pub queued: usize,
}

impl Platform {
    /// Verifies one QuickBooks webhook delivery and queues a payment read for every workspace it concerns.
    /// Answers only once those reads are durably queued.
    pub async fn accept_quickbooks_notification(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<NotificationsAccepted, NotificationRejection> {
        let store_err = |e: crate::PlatformError| NotificationRejection::Store(e.to_string());
        // The body is read before it is trusted only to learn which companies it names; nothing is acted on
        // until the signature checks out.
        let events = webhook::parse(body).map_err(|e| NotificationRejection::BadPayload(e.to_string()))?;
        let realms: BTreeSet<&str> = events.iter().map(|e| e.realm_id.as_str()).collect();
        let mut concerned: Vec<(String, String)> = Vec::new();
        let mut verifiers: Vec<String> = Vec::new();
        for ws in self.list_workspaces().await.map_err(store_err)? {
            let status = self.status(&ws.id).await.map_err(store_err)?;
            let (ConnectionState::Connected, Some(realm), Some(name)) = (status.state, status.realm_id, status.connection_name) else {
                continue;
            };
            if !realms.contains(realm.as_str()) {
                continue;
            }
            let conn = self.store.get_connection(&name).await.map_err(|e| NotificationRejection::Store(e.to_string()))?;
            if let Some(v) = conn.as_ref().and_then(|c| c.credentials.get("verifier_token")).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                verifiers.push(v.to_string());
            }
            concerned.push((ws.id, realm));
        }
        if !signature.is_some_and(|sig| verifiers.iter().any(|v| webhook::verify(v, body, sig))) {
            return Err(NotificationRejection::BadSignature);
        }
        let delivery: String = Sha256::digest(body).iter().take(16).map(|b| format!("{b:02x}")).collect();
        let mut accepted = NotificationsAccepted { events: events.len(), queued: 0 };
        for (ws, realm) in concerned {
            let relevant = events.iter().any(|e| e.realm_id == realm && PAYMENT_ENTITIES.iter().any(|p| p.eq_ignore_ascii_case(&e.entity)));
            if !relevant {
                continue;
            }
            let task = ledgerlink_store::NewPlatformTask {
                workspace_id: ws.clone(),
                kind: TASK_PAYMENTS.into(),
                dedupe_key: format!("payments:{ws}:{delivery}"),
                payload: json!({"reason": "quickbooks webhook"}),
                run_at: now(),
                max_attempts: self.options.max_attempts,
            };
            let (_, inserted) = self.store.enqueue_task(&task).await.map_err(|e| NotificationRejection::Store(e.to_string()))?;
            if inserted {
                accepted.queued += 1;
            }
        }
        if accepted.queued > 0 {
            self.wake_worker();
        }
        Ok(accepted)
    }
}
