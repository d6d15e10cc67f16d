//! A linearizability checker for the admin history the workloads produce.
//!
//! The model is a grow-only set with unique inserts: each consumer name is created at most once
//! and never deleted, and reads ask whether a name exists. For such a history, linearizability
//! reduces to one condition per name: there must be an instant `t` (the insert's linearization
//! point) with
//! - `t` inside the insert's `[start, end]` if it was acknowledged, or after its start if its
//!   outcome is unknown (it may also never have happened), and never if it failed;
//! - every read that saw the name absent *starting* before `t`;
//! - every read that saw the name present *ending* after `t`.
//!
//! That is exact for this model, checked in O(operations). It is not a general checker (no
//! deletes, no overwrites): richer operations need a Wing–Gong style search.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Timed out or the connection broke: it may or may not have happened.
    Unknown,
}

#[derive(Debug, Clone)]
pub enum Op {
    Insert {
        key: String,
        outcome: Outcome,
    },
    /// `present: None` when the read itself failed (ignored by the checker).
    Read {
        key: String,
        present: Option<bool>,
    },
}

#[derive(Debug, Clone)]
pub struct Event {
    pub start: Instant,
    pub end: Instant,
    pub op: Op,
}

/// The first non-linearizable key found, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub reason: String,
}

pub fn check(history: &[Event]) -> Result<usize, Violation> {
    #[derive(Default)]
    struct PerKey {
        insert: Option<(Instant, Instant, Outcome)>,
        /// Latest start among reads that saw the key absent.
        absent_start_max: Option<Instant>,
        /// Earliest end among reads that saw the key present.
        present_end_min: Option<Instant>,
    }
    let mut keys: BTreeMap<&str, PerKey> = BTreeMap::new();
    for e in history {
        match &e.op {
            Op::Insert { key, outcome } => keys.entry(key).or_default().insert = Some((e.start, e.end, *outcome)),
            Op::Read { key, present: Some(true) } => {
                let k = keys.entry(key).or_default();
                k.present_end_min = Some(k.present_end_min.map_or(e.end, |m| m.min(e.end)));
            }
            Op::Read { key, present: Some(false) } => {
                let k = keys.entry(key).or_default();
                k.absent_start_max = Some(k.absent_start_max.map_or(e.start, |m| m.max(e.start)));
            }
            Op::Read { present: None, .. } => {}
        }
    }
    let violation = |key: &str, reason: String| Violation { key: key.to_string(), reason };
    for (key, k) in &keys {
        let Some(present_end) = k.present_end_min else { continue };
        let Some((w_start, w_end, outcome)) = k.insert else {
            return Err(violation(key, "read present, but never inserted".into()));
        };
        if outcome == Outcome::Failed {
            return Err(violation(key, "read present, but its insert failed".into()));
        }
        // t must satisfy: t ≥ w_start, t > absent_start_max, t < present_end, and t ≤ w_end if Ok.
        let lower = k.absent_start_max.map_or(w_start, |a| a.max(w_start));
        let upper = if outcome == Outcome::Ok { present_end.min(w_end) } else { present_end };
        if lower >= upper {
            return Err(violation(
                key,
                format!(
                    "no linearization point: lower bound {:?} ≥ upper bound {:?} after the insert began",
                    lower - w_start,
                    upper.saturating_duration_since(w_start)
                ),
            ));
        }
    }
    // An acknowledged insert must be visible to reads that start after it ended.
    for (key, k) in &keys {
        if let (Some((_, w_end, Outcome::Ok)), Some(a)) = (k.insert, k.absent_start_max) {
            if a > w_end {
                return Err(violation(
                    key,
                    "a read that began after the insert was acknowledged did not see it".into(),
                ));
            }
        }
    }
    Ok(history.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn ev(base: Instant, s: u64, e: u64, op: Op) -> Event {
        Event { start: at(base, s), end: at(base, e), op }
    }

    fn ins(k: &str, o: Outcome) -> Op {
        Op::Insert { key: k.into(), outcome: o }
    }

    fn read(k: &str, p: bool) -> Op {
        Op::Read { key: k.into(), present: Some(p) }
    }

    #[test]
    fn accepts_linearizable_histories() {
        let b = Instant::now();
        let h = vec![
            ev(b, 0, 10, ins("a", Outcome::Ok)),
            ev(b, 2, 4, read("a", false)),  // concurrent: may precede the insert
            ev(b, 5, 12, read("a", true)),  // concurrent: may follow it
            ev(b, 11, 13, read("a", true)), // after the ack
            ev(b, 20, 30, ins("b", Outcome::Unknown)),
            ev(b, 40, 41, read("b", false)), // an unknown insert may never have happened
            ev(b, 50, 60, ins("c", Outcome::Unknown)),
            ev(b, 70, 71, read("c", true)), // ... or may have
        ];
        assert_eq!(check(&h), Ok(8));
    }

    #[test]
    fn catches_a_planted_stale_read() {
        let b = Instant::now();
        // The insert was acknowledged at 10; a read that began at 15 did not see it.
        let h = vec![ev(b, 0, 10, ins("a", Outcome::Ok)), ev(b, 15, 16, read("a", false))];
        assert!(check(&h).is_err());
    }

    #[test]
    fn catches_reads_that_flip_back() {
        let b = Instant::now();
        // Seen present (ending at 6), then absent by a read that started at 7: the set shrank.
        let h = vec![
            ev(b, 0, 100, ins("a", Outcome::Unknown)),
            ev(b, 5, 6, read("a", true)),
            ev(b, 7, 8, read("a", false)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn catches_phantoms() {
        let b = Instant::now();
        assert!(check(&[ev(b, 0, 1, read("ghost", true))]).is_err());
        assert!(check(&[ev(b, 0, 5, ins("x", Outcome::Failed)), ev(b, 6, 7, read("x", true))]).is_err());
    }
}
