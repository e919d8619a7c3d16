//! Typed calls over [`QboEntity`] values: create, read, sparse update, query, delete and void.
//!
//! The payload builders ([`create_payload`], [`sparse_update_payload`]) are public so the wire format can be
//! checked (snapshot tests) on exactly what the calls send.

use reqwest::Method;
use serde_json::Value;

use super::model::{QboEntity, Removal, VoidStyle};
use super::query::QueryBuilder;
use super::{QuickbooksConnector, request_id, unexpected, unwrap_entity};
use crate::{ConnectorError, Record, http};

fn invalid(code: &str, message: String, field: Option<&str>) -> ConnectorError {
    ConnectorError::Validation { code: code.into(), message, field: field.map(str::to_string) }
}

fn to_object<T: QboEntity>(entity: &T) -> Result<Record, ConnectorError> {
    match serde_json::to_value(entity) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(invalid("invalid_entity", format!("{} did not encode as an object: {other}", T::NAME), None)),
        Err(e) => Err(invalid("invalid_entity", format!("{} cannot be encoded: {e}", T::NAME), None)),
    }
}

/// Decodes an entity QuickBooks returned. A shape this type cannot read is an unexpected answer (the write, if
/// any, has happened).
pub fn decode<T: QboEntity>(record: Record) -> Result<T, ConnectorError> {
    serde_json::from_value(Value::Object(record))
        .map_err(|e| unexpected(&format!("the {} in the answer does not match its model: {e}", T::NAME)))
}

/// The body of a create: the entity without the server-owned header (`Id`, `SyncToken`, `MetaData`) and
/// without the read-only markers QuickBooks adds to answers (`domain`, `sparse`).
pub fn create_payload<T: QboEntity>(entity: &T) -> Result<Value, ConnectorError> {
    let mut body = to_object(entity)?;
    for k in ["Id", "SyncToken", "MetaData", "domain", "sparse", "time"] {
        body.remove(k);
    }
    Ok(Value::Object(body))
}

/// The body of a sparse update: the fields set on `changes` plus `Id`, `SyncToken` and `"sparse": true`. Both
/// `Id` and `SyncToken` are required (the update must say which version it changes).
pub fn sparse_update_payload<T: QboEntity>(changes: &T) -> Result<Value, ConnectorError> {
    let id = changes.id().filter(|s| !s.is_empty());
    let token = changes.sync_token().filter(|s| !s.is_empty());
    let (Some(_), Some(_)) = (id, token) else {
        return Err(invalid(
            "missing_sync_token",
            format!("a sparse update of {} needs both Id and SyncToken (read the entity first)", T::NAME),
            Some(if id.is_none() { "Id" } else { "SyncToken" }),
        ));
    };
    let mut body = to_object(changes)?;
    for k in ["MetaData", "domain", "time"] {
        body.remove(k);
    }
    body.insert("sparse".into(), Value::Bool(true));
    Ok(Value::Object(body))
}

impl QuickbooksConnector {
    /// Creates `entity` with `requestid` derived from `idempotency_key` (a repeat returns the first result).
    pub async fn create_entity<T: QboEntity>(&self, entity: &T, idempotency_key: &str) -> Result<T, ConnectorError> {
        if matches!(T::REMOVAL, Removal::None) {
            return Err(invalid("read_only", format!("QuickBooks {} cannot be created", T::NAME), None));
        }
        if idempotency_key.is_empty() {
            return Err(invalid(
                "missing_idempotency_key",
                format!("creating a QuickBooks {} needs an idempotency key", T::NAME),
                None,
            ));
        }
        let body = create_payload(entity)?;
        let rid = request_id(idempotency_key);
        decode(self.post_entity(T::NAME, &body, Some(&rid)).await?)
    }

    /// Reads one entity by id; `None` when it does not exist. CompanyInfo is read by the realm id and
    /// Preferences ignores `id`.
    pub async fn read_entity<T: QboEntity>(&self, id: &str) -> Result<Option<T>, ConnectorError> {
        let path = match T::NAME {
            "Preferences" => "preferences".to_string(),
            name => format!("{}/{}", name.to_ascii_lowercase(), http::path_segment(id)),
        };
        match self.call(Method::GET, &path, &[], None).await {
            Ok(body) => decode(unwrap_entity(body, T::NAME)?).map(Some),
            Err(ConnectorError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a sparse update of the fields set on `changes` (which carries `Id` and the `SyncToken` it was read
    /// at). A stale token is reported as [`ConnectorError::Conflict`]: re-read and apply again.
    pub async fn update_sparse<T: QboEntity>(&self, changes: &T) -> Result<T, ConnectorError> {
        let body = sparse_update_payload(changes)?;
        decode(self.post_entity(T::NAME, &body, None).await?)
    }

    /// Every row of a built query (paged 1,000 at a time), up to `limit`. The query must be over `T`.
    pub async fn query_entities<T: QboEntity>(
        &self,
        builder: &QueryBuilder,
        limit: Option<u32>,
    ) -> Result<Vec<T>, ConnectorError> {
        if !builder.entity().eq_ignore_ascii_case(T::NAME) {
            return Err(invalid(
                "invalid_query",
                format!("a query over {} cannot return {} values", builder.entity(), T::NAME),
                None,
            ));
        }
        self.query_paged(builder, limit).await?.into_iter().map(decode).collect()
    }

    /// Deletes a transaction (`operation=delete` with its `Id` and current `SyncToken`). Name-list entities are
    /// refused with the reason: QuickBooks only deactivates them (update `Active` to false).
    pub async fn delete_entity<T: QboEntity>(&self, id: &str, sync_token: &str) -> Result<(), ConnectorError> {
        match T::REMOVAL {
            Removal::Delete => {}
            Removal::Deactivate => {
                return Err(invalid(
                    "not_deletable",
                    format!("QuickBooks does not delete a {}: make it inactive (Active = false) instead", T::NAME),
                    None,
                ));
            }
            Removal::None => {
                return Err(invalid("not_deletable", format!("QuickBooks {} cannot be removed", T::NAME), None));
            }
        }
        let body = serde_json::json!({"Id": id, "SyncToken": sync_token});
        let answer = self
            .call(Method::POST, &T::NAME.to_ascii_lowercase(), &[("operation", "delete".to_string())], Some(&body))
            .await?;
        let record = unwrap_entity(answer, T::NAME)?;
        match record.get("status").and_then(Value::as_str) {
            Some("Deleted") => Ok(()),
            other => Err(unexpected(&format!("deleting {} {id} answered status {other:?}", T::NAME))),
        }
    }

    /// Voids a transaction: `operation=void` for invoices, `operation=update&include=void` with a sparse body for
    /// payments, sales receipts and bill payments. Other entities cannot be voided.
    pub async fn void_entity<T: QboEntity>(&self, id: &str, sync_token: &str) -> Result<T, ConnectorError> {
        let (params, body): (Vec<(&str, String)>, Value) = match T::VOID {
            VoidStyle::Operation => {
                (vec![("operation", "void".into())], serde_json::json!({"Id": id, "SyncToken": sync_token}))
            }
            VoidStyle::IncludeVoid => (
                vec![("operation", "update".into()), ("include", "void".into())],
                serde_json::json!({"Id": id, "SyncToken": sync_token, "sparse": true}),
            ),
            VoidStyle::None => {
                return Err(invalid("not_voidable", format!("QuickBooks {} cannot be voided", T::NAME), None));
            }
        };
        let answer = self.call(Method::POST, &T::NAME.to_ascii_lowercase(), &params, Some(&body)).await?;
        decode(unwrap_entity(answer, T::NAME)?)
    }
}
