//! The `sync` step: two-way sync of field pairs between two linked records, and of their life (active, inactive,
//! deleted), each settled by the flow's policies.
//!
//! The link between the two records holds, per side, a JSON map of what was last synced (`a_hash` / `b_hash`):
//! the hash of each field's value, and under [`STATE_KEY`] the record's state. That is the common base a three-way
//! comparison needs to tell "changed here" from "changed there" from "changed on both sides". A change we wrote
//! ourselves comes back finding both sides equal to the base and stops there: no loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, Record};
use ledgerlink_flow::{Expr, Removal, RemovalPolicy, SourceRef, Step, SyncPolicy};
use ledgerlink_model::RecordRef;
use ledgerlink_store::{Link, NewReviewItem};
use serde_json::{Value, json};

use super::{PlannedWrite, Run, StepError, conn_err, insert_path, invalid, same_value, value_at};
use crate::keys;

/// The key of a record's state in the link's per-side map. Field paths cannot start with `@`.
const STATE_KEY: &str = "@state";

/// Where a record is in its life, as far as a sync is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    Active,
    Inactive,
    Deleted,
}

impl Life {
    fn as_str(self) -> &'static str {
        match self {
            Life::Active => "active",
            Life::Inactive => "inactive",
            Life::Deleted => "deleted",
        }
    }

    /// The state remembered on a link; a link made before states were kept was made between active records.
    fn remembered(map: &BTreeMap<String, String>) -> Life {
        match map.get(STATE_KEY).map(String::as_str) {
            Some("inactive") => Life::Inactive,
            Some("deleted") => Life::Deleted,
            _ => Life::Active,
        }
    }

    fn removed(self) -> bool {
        self != Life::Active
    }
}

/// A record's state: deleted when it is gone or carries the system's deletion marker, inactive when its active
/// field is `false` (only an explicit `false`: an empty checkbox deactivates nothing), else active.
pub(super) fn life_of(conn: &dyn Connector, rec: Option<&Record>, active_field: Option<&str>) -> Life {
    let Some(rec) = rec else { return Life::Deleted };
    if conn.is_deleted(rec) {
        return Life::Deleted;
    }
    match active_field {
        Some(f) if value_at(rec, f) == Value::Bool(false) => Life::Inactive,
        _ => Life::Active,
    }
}

/// Whether a sync over `link` saw `record` deleted (and so remembered it).
pub(super) fn remembers_deleted(link: &Link, record: &RecordRef) -> bool {
    let side = if &link.a == record { &link.a_hash } else { &link.b_hash };
    Life::remembered(&parse_base(side)) == Life::Deleted
}

/// One side of a synced pair, as read in this run.
struct Side<'r> {
    at: &'r RecordRef,
    conn: Arc<dyn Connector>,
    rec: Option<Record>,
    life: Life,
    /// The field that says whether the record is active (the flow's, else the system's own), if any.
    active_field: Option<String>,
    /// The step setting that names that field (for the error when there is none).
    setting: &'static str,
}

fn parse_base(h: &Option<String>) -> BTreeMap<String, String> {
    h.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
}

fn merge_base(old: &Option<String>, new: BTreeMap<String, String>) -> Option<String> {
    let mut m = parse_base(old);
    m.extend(new);
    serde_json::to_string(&m).ok()
}

impl Run<'_> {
    /// Whether `src` is this run's trigger record and that record is deleted or inactive (by the system's own
    /// marker, or the active field a `sync` step of this flow names for it).
    pub(super) fn trigger_removed(&self, src: &RecordRef) -> bool {
        if self.trigger_ref().as_ref() != Some(src) {
            return false;
        }
        let Some(conn) = self.engine.connectors.get(&src.connection) else { return false };
        let Some(Value::Object(rec)) = self.scope.get("record") else { return false };
        let named = self.flow.steps.iter().find_map(|st| match &st.kind {
            ledgerlink_flow::StepKind::Sync { source, removal, .. } if source.connection == src.connection && source.object == src.object => {
                removal.source_active_field.clone()
            }
            _ => None,
        });
        let field = named.or_else(|| conn.active_field(&src.object).map(str::to_string));
        life_of(conn.as_ref(), Some(rec), field.as_deref()).removed()
    }

    /// Two-way sync of field pairs and of the records' life; see [`ledgerlink_flow::StepKind::Sync`].
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sync(
        &mut self,
        step: &Step,
        connection: &str,
        object: &str,
        id: &Expr,
        source: &SourceRef,
        pairs: &[(String, String)],
        policies: &[(String, SyncPolicy)],
        default_policy: SyncPolicy,
        removal: &Removal,
    ) -> Result<Value, StepError> {
        let src = self.source_ref(step, source)?;
        let Some(target_id) = self.eval_string(step, id, "record_id")? else {
            return Err(invalid(step, format!("no {object} to sync with (`{}` is empty)", id.source())));
        };
        let target = RecordRef::new(connection, object, target_id.clone());
        let src_conn = self.connector(step, &src.connection)?;
        let tgt_conn = self.connector(step, connection)?;
        let locks = self.engine.locks.clone();
        // The same lock whichever side triggered: the two directions of one pair must not sync at once.
        let (first, second) = if src <= target { (&src, &target) } else { (&target, &src) };
        let _turn = locks.lock(&format!("sync:{first}|{second}")).await;

        let link = self.engine.store.find_link(&src, connection, object).await?;
        let link = match link {
            Some(l) if (l.a == target || l.b == target) => l,
            _ => return Err(invalid(step, format!("{src} is not linked to {target}; link them first (find_or_create)"))),
        };
        let src_is_a = link.a == src;
        let (base_src, base_tgt) =
            if src_is_a { (parse_base(&link.a_hash), parse_base(&link.b_hash)) } else { (parse_base(&link.b_hash), parse_base(&link.a_hash)) };

        // Fresh reads of both sides (the trigger snapshot may already be stale).
        let src_active = removal.source_active_field.clone().or_else(|| src_conn.active_field(&src.object).map(str::to_string));
        let tgt_active = removal.target_active_field.clone().or_else(|| tgt_conn.active_field(object).map(str::to_string));
        let read_fields = |second: bool, conn: &Arc<dyn Connector>, active: &Option<String>| -> Vec<String> {
            let mut f: Vec<String> = pairs.iter().map(|(a, b)| if second { b } else { a }).map(|p| p.split('.').next().unwrap_or(p).to_string()).collect();
            f.push("Id".into());
            f.extend(conn.change_timestamp_fields().iter().map(|s| s.to_string()));
            f.extend(active.iter().map(|a| a.split('.').next().unwrap_or(a).to_string()));
            f.sort();
            f.dedup();
            f
        };
        let src_rec = src_conn.get(&src.object, &src.id, &read_fields(false, &src_conn, &src_active)).await.map_err(|e| conn_err(step, e))?;
        let tgt_rec = tgt_conn.get(object, &target_id, &read_fields(true, &tgt_conn, &tgt_active)).await.map_err(|e| conn_err(step, e))?;
        let mut s = Side { at: &src, life: life_of(src_conn.as_ref(), src_rec.as_ref(), src_active.as_deref()), conn: src_conn, rec: src_rec, active_field: src_active, setting: "source_active_field" };
        let mut t = Side { at: &target, life: life_of(tgt_conn.as_ref(), tgt_rec.as_ref(), tgt_active.as_deref()), conn: tgt_conn, rec: tgt_rec, active_field: tgt_active, setting: "target_active_field" };

        // 1. The records' life: a state that changed since the last sync acts on the other record, once.
        let (was_s, was_t) = (Life::remembered(&base_src), Life::remembered(&base_tgt));
        let mut review = None;
        let mut life_writes = Vec::new();
        if s.life != t.life {
            let (s_changed, t_changed) = (s.life != was_s, t.life != was_t);
            // When both changed, the removal acts (a reactivation racing a delete keeps the delete's outcome).
            let source_acts = match (s_changed, t_changed) {
                (true, false) => Some(true),
                (false, true) => Some(false),
                (true, true) if s.life.removed() != t.life.removed() => Some(s.life.removed()),
                _ => None,
            };
            if let Some(source_acts) = source_acts {
                let (from, to, policy) =
                    if source_acts { (&s, &mut t, removal.on_source) } else { (&t, &mut s, removal.on_target) };
                match self.follow_life(step, from, to, policy).await? {
                    Followed::Wrote(what) => life_writes.push(what),
                    Followed::Review(reason) => review = Some(reason),
                    Followed::Nothing => {}
                }
            }
        }

        // 2. The fields, while both records are active.
        let mut to_target = Record::new();
        let mut to_source = Record::new();
        let mut new_src = BTreeMap::new();
        let mut new_tgt = BTreeMap::new();
        let both_active = s.life == Life::Active && t.life == Life::Active;
        if both_active {
            let (Some(src_rec), Some(tgt_rec)) = (&s.rec, &t.rec) else {
                return Err(invalid(step, format!("{src} or {target} could not be read")));
            };
            // A record an earlier step of this run updated counts with its time from before that write.
            let changed = |at: &RecordRef, conn: &Arc<dyn Connector>, rec: &Record| {
                self.changed_before_run.get(&at.to_string()).copied().or_else(|| conn.change_timestamp(rec))
            };
            let newer_source = match (changed(s.at, &s.conn, src_rec), changed(t.at, &t.conn, tgt_rec)) {
                (Some(a), Some(b)) => a >= b,
                _ => true,
            };
            let mut conflicts = Vec::new();
            for (sf, tf) in pairs {
                let vs = value_at(src_rec, sf);
                let vt = value_at(tgt_rec, tf);
                let (hs, ht) = (keys::value_hash(&vs), keys::value_hash(&vt));
                let final_value = if same_value(&vs, &vt) {
                    vs.clone()
                } else {
                    let src_changed = base_src.get(sf) != Some(&hs);
                    let tgt_changed = base_tgt.get(tf) != Some(&ht);
                    let policy = policies.iter().find(|(f, _)| f == sf).map(|(_, p)| *p).unwrap_or(default_policy);
                    let source_wins = match (src_changed, tgt_changed) {
                        (true, false) => Some(true),
                        (false, true) => Some(false),
                        // Both changed (or there is no common base yet): the policy settles it.
                        _ => match policy {
                            SyncPolicy::SourceWins => Some(true),
                            SyncPolicy::TargetWins => Some(false),
                            SyncPolicy::NewestWins => Some(newer_source),
                            SyncPolicy::Review => None,
                        },
                    };
                    match source_wins {
                        Some(true) => {
                            insert_path(&mut to_target, tf, vs.clone());
                            vs.clone()
                        }
                        Some(false) => {
                            insert_path(&mut to_source, sf, vt.clone());
                            vt.clone()
                        }
                        None => {
                            conflicts.push(json!({"field": sf, "other_field": tf, "here": vs, "there": vt}));
                            continue;
                        }
                    }
                };
                let h = keys::value_hash(&final_value);
                new_src.insert(sf.clone(), h.clone());
                new_tgt.insert(tf.clone(), h);
            }
            if !conflicts.is_empty() {
                let id = self
                    .raise_review(NewReviewItem {
                        flow: Some(self.flow.name.clone()),
                        job_id: self.job_id,
                        kind: "sync_conflict".into(),
                        reason: format!(
                            "step `{}`: {} and {} were both changed since they were last in sync, to different values ({}); correct one side and retry, or dismiss",
                            step.id,
                            src,
                            target,
                            conflicts.iter().map(|c| format!("{} = {} here, {} there", c["field"].as_str().unwrap_or(""), c["here"], c["there"])).collect::<Vec<_>>().join("; ")
                        ),
                        subject: Some(src.clone()),
                        details: json!({"step": step.id, "conflicts": conflicts, "other": target}),
                        created_at: crate::now(),
                    })
                    .await?;
                return Err(StepError::Review(id));
            }
            for (side, fields) in [(&t, &to_target), (&s, &to_source)] {
                if !fields.is_empty() {
                    self.write_fields(step, side, fields).await?;
                }
            }
        }
        if to_source.is_empty() && to_target.is_empty() && life_writes.is_empty() {
            self.count(|s| &s.writes_skipped_unchanged);
        }

        // 3. Remember what both sides now hold: the next run compares with this.
        if self.plan.is_none() {
            new_src.insert(STATE_KEY.into(), s.life.as_str().into());
            new_tgt.insert(STATE_KEY.into(), t.life.as_str().into());
            let (a_map, b_map) = if src_is_a { (new_src, new_tgt) } else { (new_tgt, new_src) };
            let updated = Link {
                a_hash: merge_base(&link.a_hash, a_map),
                b_hash: merge_base(&link.b_hash, b_map),
                updated_at: crate::now(),
                ..link
            };
            self.engine.store.put_link(&updated).await?;
        }
        if let Some(reason) = review {
            let id = self
                .raise_review(NewReviewItem {
                    flow: Some(self.flow.name.clone()),
                    job_id: self.job_id,
                    kind: "sync_removed".into(),
                    reason: format!("step `{}`: {reason}", step.id),
                    subject: Some(src.clone()),
                    details: json!({"step": step.id, "source": src, "source_state": s.life.as_str(), "other": target, "other_state": t.life.as_str()}),
                    created_at: crate::now(),
                })
                .await?;
            return Err(StepError::Review(id));
        }
        Ok(json!({
            "to_source": to_source.keys().collect::<Vec<_>>(),
            "to_target": to_target.keys().collect::<Vec<_>>(),
            "life": life_writes,
            "source_state": s.life.as_str(),
            "target_state": t.life.as_str(),
            "conflicts": 0,
        }))
    }

    /// Applies `policy` to `to` because `from` changed state (removed, or back from a removal).
    async fn follow_life(&mut self, step: &Step, from: &Side<'_>, to: &mut Side<'_>, policy: RemovalPolicy) -> Result<Followed, StepError> {
        if to.life == Life::Deleted {
            // Nothing to act on: a deleted record cannot be restored from here.
            return Ok(Followed::Nothing);
        }
        let what = match from.life {
            Life::Deleted => "deleted",
            Life::Inactive => "deactivated",
            Life::Active => "active again",
        };
        if from.life == Life::Active {
            // Back from a removal: only a deactivation we mirrored is undone.
            if policy == RemovalPolicy::Deactivate && to.life == Life::Inactive {
                self.set_active(step, to, true).await?;
                return Ok(Followed::Wrote(format!("{} reactivated", to.at)));
            }
            return Ok(Followed::Nothing);
        }
        match policy {
            RemovalPolicy::Ignore => Ok(Followed::Nothing),
            RemovalPolicy::Review => Ok(Followed::Review(format!(
                "{} was {what}; the {} linked to it, {}, was left as it is (policy: review). Deactivate or delete it by hand if it should go too; then resolve this item",
                from.at, to.at.object, to.at
            ))),
            RemovalPolicy::Deactivate if to.life == Life::Inactive => Ok(Followed::Nothing),
            RemovalPolicy::Deactivate => {
                self.set_active(step, to, false).await?;
                Ok(Followed::Wrote(format!("{} deactivated", to.at)))
            }
            // A system that deactivates such records instead of deleting them (QuickBooks customers).
            RemovalPolicy::Delete if to.conn.active_field(&to.at.object).is_some() => {
                if to.life == Life::Inactive {
                    return Ok(Followed::Nothing);
                }
                self.set_active(step, to, false).await?;
                Ok(Followed::Wrote(format!("{} deactivated ({} does not delete {} records)", to.at, to.conn.system(), to.at.object)))
            }
            RemovalPolicy::Delete => {
                self.delete_record(step, to).await?;
                Ok(Followed::Wrote(format!("{} deleted", to.at)))
            }
        }
    }

    /// Sets the record's active field, and its state with it.
    async fn set_active(&mut self, step: &Step, side: &mut Side<'_>, active: bool) -> Result<(), StepError> {
        let Some(field) = side.active_field.clone() else {
            return Err(invalid(
                step,
                format!(
                    "{} cannot be {}: {} {} records have no active field of their own; name a checkbox with `{}` in the sync step",
                    side.at,
                    if active { "reactivated" } else { "deactivated" },
                    side.conn.system(),
                    side.at.object,
                    side.setting,
                ),
            ));
        };
        let mut fields = Record::new();
        insert_path(&mut fields, &field, Value::Bool(active));
        self.write_fields(step, side, &fields).await?;
        side.life = if active { Life::Active } else { Life::Inactive };
        Ok(())
    }

    /// A sparse update of one side, recorded like every write (audit, own-write marker, counters).
    async fn write_fields(&mut self, step: &Step, side: &Side<'_>, fields: &Record) -> Result<(), StepError> {
        let r = side.at;
        let before: Record = fields
            .keys()
            .filter_map(|k| side.rec.as_ref().and_then(|rec| rec.get(k)).map(|v| (k.clone(), v.clone())))
            .collect();
        if let Some(plan) = &mut self.plan {
            plan.push(PlannedWrite::Update {
                connection: r.connection.clone(),
                object: r.object.clone(),
                id: r.id.clone(),
                before: Value::Object(before),
                after: Value::Object(fields.clone()),
            });
            return Ok(());
        }
        match side.conn.update(&r.object, &r.id, fields).await {
            Ok(updated) => {
                self.mark_own_write(&r.connection, &r.object, &r.id, &side.conn, &updated).await?;
                self.record_audit(self.audit_entry(&r.connection, &r.object, Some(r.id.clone()), "update", "ok", Some(Value::Object(before)), Some(Value::Object(fields.clone())), None)).await?;
                self.writes += 1;
                self.count(|s| &s.records_updated);
                Ok(())
            }
            Err(e) => {
                self.record_audit(self.audit_entry(&r.connection, &r.object, Some(r.id.clone()), "update", "error", Some(Value::Object(before)), Some(Value::Object(fields.clone())), Some(e.to_string()))).await?;
                if let ledgerlink_connectors::ConnectorError::Validation { message, .. } = &e {
                    return Err(invalid(step, format!("{} refused to update {r}: {message}", r.connection)));
                }
                Err(conn_err(step, e))
            }
        }
    }

    /// Deletes one side, recorded like every write.
    async fn delete_record(&mut self, step: &Step, side: &mut Side<'_>) -> Result<(), StepError> {
        let r = side.at;
        let before = side.rec.clone().map(Value::Object);
        if let Some(plan) = &mut self.plan {
            let before = before.unwrap_or(Value::Null);
            plan.push(PlannedWrite::Delete { connection: r.connection.clone(), object: r.object.clone(), id: r.id.clone(), before });
            return Ok(());
        }
        match side.conn.delete(&r.object, &r.id).await {
            Ok(deleted) => {
                // Already gone (deleted by hand, or by an earlier attempt of this job): the outcome holds, no write.
                if deleted {
                    self.record_audit(self.audit_entry(&r.connection, &r.object, Some(r.id.clone()), "delete", "ok", before, None, None)).await?;
                    self.writes += 1;
                }
                side.life = Life::Deleted;
                Ok(())
            }
            Err(e) => {
                self.record_audit(self.audit_entry(&r.connection, &r.object, Some(r.id.clone()), "delete", "error", before, None, Some(e.to_string()))).await?;
                if let ledgerlink_connectors::ConnectorError::Validation { message, .. } = &e {
                    return Err(invalid(step, format!("{} refused to delete {r}: {message}", r.connection)));
                }
                Err(conn_err(step, e))
            }
        }
    }
}

/// What following a change of state did.
enum Followed {
    Nothing,
    Wrote(String),
    /// A person decides; the reason in words.
    Review(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_states_default_to_active() {
        assert_eq!(Life::remembered(&BTreeMap::new()), Life::Active);
        let m: BTreeMap<String, String> = [(STATE_KEY.to_string(), "inactive".to_string())].into();
        assert_eq!(Life::remembered(&m), Life::Inactive);
        let m: BTreeMap<String, String> = [(STATE_KEY.to_string(), "deleted".to_string())].into();
        assert_eq!(Life::remembered(&m), Life::Deleted);
    }
}
