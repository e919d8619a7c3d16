//! A change feed of one object: what changed and what was deleted since the last poll.
//!
//! Layout: [`ChangeFeed`] polls `SystemModstamp` (through [`Connector::changes_since`]) from its high-water mark
//! minus an overlap window, because a transaction can commit after a later one and so show up with an older
//! timestamp than records already seen; the overlap re-reads that window and [`FeedState::seen`] drops what was
//! already delivered, keyed by (id, `SystemModstamp`), so a record changed again is delivered again. Deletions
//! come from the `deleted/` feed over the same kind of window, de-duplicated by (id, deleted date). The whole
//! position is a serialisable [`FeedState`] the engine checkpoints and resumes from.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{DeletedRecord, SalesforceConnector, soql};
use crate::{Connector, ConnectorError, Record};

/// The overlap used when none is given: long enough for slow commits, short enough to re-read little.
pub const DEFAULT_OVERLAP: TimeDelta = TimeDelta::minutes(5);

/// Where a feed is: checkpoint it after handling a batch, resume from it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// Where the feed began: nothing older is delivered, however far the overlap reaches back.
    pub start: DateTime<Utc>,
    /// The newest `SystemModstamp` delivered (the poll starts at this minus the overlap).
    pub high_water: DateTime<Utc>,
    /// (id, `SystemModstamp` as sent) delivered inside the overlap window.
    pub seen: BTreeSet<(String, String)>,
    /// The deletions feed has been read up to here.
    pub deleted_covered: DateTime<Utc>,
    /// (id, deleted date) delivered inside the overlap window.
    pub deleted_seen: BTreeSet<(String, DateTime<Utc>)>,
}

impl FeedState {
    /// A feed that starts delivering changes and deletions from `start`.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        FeedState {
            start,
            high_water: start,
            seen: BTreeSet::new(),
            deleted_covered: start,
            deleted_seen: BTreeSet::new(),
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// Created or changed records, oldest first, each at most once per version.
    pub changed: Vec<Record>,
    /// Deleted records, each at most once.
    pub deleted: Vec<DeletedRecord>,
    /// True when Salesforce no longer holds deletions from the start of the window (the feed was idle longer
    /// than the recycle bin keeps them): some deletions may have been missed and a full comparison is needed.
    pub deletions_incomplete: bool,
}

/// Polls one object's changes and deletions.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    object: String,
    fields: Vec<String>,
    overlap: TimeDelta,
    state: FeedState,
}

impl ChangeFeed {
    /// A feed of `object` returning at least `fields`, positioned at `state`.
    pub fn new(object: &str, fields: &[String], state: FeedState) -> Result<Self, ConnectorError> {
        soql::check_object(object)?;
        for f in fields {
            soql::check_field(f)?;
        }
        Ok(ChangeFeed { object: object.to_string(), fields: fields.to_vec(), overlap: DEFAULT_OVERLAP, state })
    }

    /// Changes the overlap window (negative values count as zero).
    pub fn with_overlap(mut self, overlap: TimeDelta) -> Self {
        self.overlap = overlap.max(TimeDelta::zero());
        self
    }

    pub fn object(&self) -> &str {
        &self.object
    }

    /// The position to checkpoint.
    pub fn state(&self) -> &FeedState {
        &self.state
    }

    /// Reads changes and deletions since the last poll and advances the position.
    pub async fn poll(&mut self, sf: &SalesforceConnector) -> Result<ChangeBatch, ConnectorError> {
        self.poll_until(sf, Utc::now()).await
    }

    /// [`Self::poll`] with the deletions window ending at `end` (Salesforce reports deletions in whole minutes
    /// up to its own clock and says how far it covered, which is where the next window starts).
    pub async fn poll_until(
        &mut self,
        sf: &SalesforceConnector,
        end: DateTime<Utc>,
    ) -> Result<ChangeBatch, ConnectorError> {
        let mut next = self.state.clone();

        let from = (next.high_water - self.overlap).max(next.start);
        let changes = sf.changes_since(&self.object, from, &self.fields).await?;
        let mut changed = Vec::new();
        for record in changes.records {
            let (Some(id), Some(stamp_text)) =
                (sf.record_id(&record), record.get("SystemModstamp").and_then(|v| v.as_str()).map(str::to_string))
            else {
                continue;
            };
            let Some(stamp) = sf.change_timestamp(&record) else {
                continue;
            };
            if next.seen.insert((id, stamp_text)) {
                next.high_water = next.high_water.max(stamp);
                changed.push(record);
            }
        }
        let keep_from = next.high_water - self.overlap;
        next.seen.retain(|(_, stamp)| super::parse_timestamp(stamp).is_none_or(|t| t >= keep_from));

        let start = (next.deleted_covered - self.overlap).max(next.start);
        // The end must be after the start; the server says how far it actually covered.
        let end = end.max(start + TimeDelta::minutes(1));
        let deletions = sf.deleted_since(&self.object, start, end).await?;
        let deletions_incomplete = deletions.earliest_date_available.is_some_and(|earliest| earliest > start);
        let mut deleted = Vec::new();
        for d in deletions.records {
            if next.deleted_seen.insert((d.id.clone(), d.deleted_date)) {
                deleted.push(d);
            }
        }
        next.deleted_covered = deletions.latest_date_covered.unwrap_or(end).max(next.deleted_covered);
        let keep_from = next.deleted_covered - self.overlap;
        next.deleted_seen.retain(|(_, at)| *at >= keep_from);

        self.state = next;
        Ok(ChangeBatch { changed, deleted, deletions_incomplete })
    }
}
