//! The sync-activity chart: inline SVG drawn on the server from the audit log, so there is no chart library and
//! no JavaScript, and the chart reads the same with scripts off.
//!
//! [`bucket`] counts writes per hour (or per day) into a fixed number of slots ending at `now`; [`svg`] draws
//! them as stacked bars (successful writes, failed writes) with a title and a text summary for screen readers.

use chrono::{DateTime, Duration, DurationRound, Utc};

/// Counts in one time slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub ok: u32,
    pub failed: u32,
}

/// `slots` consecutive slots of `width` ending with the one that holds `now`, with each event counted in its
/// slot; events outside the window are left out. `events` are (time, succeeded).
pub fn bucket(events: impl IntoIterator<Item = (DateTime<Utc>, bool)>, now: DateTime<Utc>, width: Duration, slots: usize) -> Vec<Slot> {
    let last = now.duration_trunc(width).unwrap_or(now);
    let first = last - width * (slots.saturating_sub(1) as i32);
    let mut out: Vec<Slot> = (0..slots).map(|i| Slot { start: first + width * (i as i32), ok: 0, failed: 0 }).collect();
    for (at, ok) in events {
        if at < first || at >= last + width {
            continue;
        }
        let i = ((at - first).num_milliseconds() / width.num_milliseconds().max(1)) as usize;
        if let Some(s) = out.get_mut(i) {
            if ok {
                s.ok += 1;
            } else {
                s.failed += 1;
            }
        }
    }
    out
}

const W: u32 = 720;
const H: u32 = 200;
const PAD_L: u32 = 36;
const PAD_B: u32 = 24;
const PAD_T: u32 = 10;

/// Stacked bars of `slots`; `label` formats a slot's start for the axis (every few slots).
pub fn svg(slots: &[Slot], title: &str, label: impl Fn(DateTime<Utc>) -> String) -> String {
    use std::fmt::Write as _;
    let max = slots.iter().map(|s| s.ok + s.failed).max().unwrap_or(0).max(1);
    let total_ok: u32 = slots.iter().map(|s| s.ok).sum();
    let total_failed: u32 = slots.iter().map(|s| s.failed).sum();
    let plot_w = W - PAD_L - 4;
    let plot_h = H - PAD_B - PAD_T;
    let n = slots.len().max(1) as u32;
    let slot_w = plot_w / n;
    let bar_w = (slot_w * 7 / 10).max(1);
    let y = |v: u32| PAD_T + plot_h - v * plot_h / max;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">{t}</title><desc id="chart-desc">{total_ok} successful and {total_failed} failed writes in the period shown.</desc>"#,
        t = escape(title)
    );
    let _ = write!(out, r##"<line x1="{PAD_L}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>"##, b = PAD_T + plot_h, r = W - 4);
    let _ = write!(out, r##"<text x="{x}" y="{ty}" font-size="10" text-anchor="end" fill="#555">{max}</text>"##, x = PAD_L - 4, ty = PAD_T + 8);
    let _ = write!(out, r##"<text x="{x}" y="{ty}" font-size="10" text-anchor="end" fill="#555">0</text>"##, x = PAD_L - 4, ty = PAD_T + plot_h);
    let every = (slots.len() / 6).max(1);
    for (i, s) in slots.iter().enumerate() {
        let x = PAD_L + i as u32 * slot_w + (slot_w - bar_w) / 2;
        let ok_top = y(s.ok);
        let all_top = y(s.ok + s.failed);
        if s.ok > 0 {
            let _ = write!(out, r##"<rect class="ok" x="{x}" y="{ok_top}" width="{bar_w}" height="{h}" fill="#2f7d4f"><title>{l}: {n} written</title></rect>"##, h = PAD_T + plot_h - ok_top, l = escape(&label(s.start)), n = s.ok);
        }
        if s.failed > 0 {
            let _ = write!(out, r##"<rect class="failed" x="{x}" y="{all_top}" width="{bar_w}" height="{h}" fill="#b3261e"><title>{l}: {n} failed</title></rect>"##, h = ok_top - all_top, l = escape(&label(s.start)), n = s.failed);
        }
        if i % every == 0 {
            let _ = write!(out, r##"<text x="{cx}" y="{ty}" font-size="10" text-anchor="middle" fill="#555">{l}</text>"##, cx = x + bar_w / 2, ty = H - 8, l = escape(&label(s.start)));
        }
    }
    out.push_str("</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn events_land_in_their_hour_and_old_ones_are_left_out() {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 12, 30, 0).unwrap();
        let events = [
            (Utc.with_ymd_and_hms(2025, 3, 1, 12, 5, 0).unwrap(), true),
            (Utc.with_ymd_and_hms(2025, 3, 1, 12, 59, 0).unwrap(), false),
            (Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap(), true),
            (Utc.with_ymd_and_hms(2025, 3, 1, 9, 59, 59).unwrap(), true),
        ];
        let slots = bucket(events, now, Duration::hours(1), 3);
        assert_eq!(slots.len(), 3);
        assert_eq!(slots[0], Slot { start: Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap(), ok: 1, failed: 0 });
        assert_eq!((slots[1].ok, slots[1].failed), (0, 0));
        assert_eq!((slots[2].ok, slots[2].failed), (1, 1));
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_slot_and_described_in_words() {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
        let slots = [Slot { start: t, ok: 4, failed: 0 }, Slot { start: t + Duration::hours(1), ok: 1, failed: 1 }];
        let s = svg(&slots, "Writes <per hour>", |t| t.format("%H:00").to_string());
        assert!(s.contains("Writes &lt;per hour&gt;"));
        assert!(s.contains("5 successful and 1 failed writes"));
        assert_eq!(s.matches("class=\"ok\"").count(), 2);
        assert_eq!(s.matches("class=\"failed\"").count(), 1);
        // The busiest slot (4) fills the plot height: from the top padding down to the axis.
        assert!(s.contains(&format!("y=\"{PAD_T}\" width=")), "{s}");
    }
}
