//! What a flush round does with a batch, as pure decisions: which due events expire,
//! which are too large, what is sent, and what an answer means for the events sent.
//! The round ([`super::round`]) only applies them to the queue, so every rule here has
//! a unit test that needs no queue, no server and no clock.

use std::time::Duration;

use crate::delivery::Outcome;
use crate::destination::{self, ByteLimits};
use crate::queue::{DropReason, Pending};

/// A due batch, sorted by what happens to each event.
#[derive(Debug, Default)]
pub(super) struct BatchPlan {
    /// Dropped: each with why (age, attempts, too large for the destination).
    pub drop: Vec<(DropReason, Vec<Pending>)>,
    /// Sent now, in queue order; what did not fit stays queued for the next batch.
    pub send: Vec<Pending>,
}

/// Sorts a due `batch`: events older than `max_age_ms` at `now`, then events past
/// `max_attempts`, expire (as they reach the front of the queue, so a flush never
/// scans the whole queue for them); then the rest is cut to the destination's limits.
pub(super) fn plan_batch(
    batch: Vec<Pending>,
    now: i64,
    max_age_ms: i64,
    max_attempts: u32,
    limits: ByteLimits,
    event_len: impl Fn(&str) -> usize,
) -> BatchPlan {
    let cutoff = now.saturating_sub(max_age_ms);
    let (old, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.created_at < cutoff);
    let (spent, batch): (Vec<_>, Vec<_>) =
        batch.into_iter().partition(|p| p.attempts >= max_attempts);
    let (too_large, send) = destination::cut(batch, limits, |p| event_len(&p.payload));
    let drop = [
        (DropReason::Age, old),
        (DropReason::Attempts, spent),
        (DropReason::TooLarge, too_large),
    ]
    .into_iter()
    .filter(|(_, events)| !events.is_empty())
    .collect();
    BatchPlan { drop, send }
}

/// What to do with the events of one request, given the endpoint's answer.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Delivered: delete them, counted as sent.
    Delivered(Vec<Pending>),
    /// Drop them, for this reason.
    Drop(DropReason, Vec<Pending>),
    /// Too large together: send the halves, in order, first half first.
    Split(Vec<Pending>, Vec<Pending>),
    /// Keep them, count an attempt, back off (for the server's time, if it gave one),
    /// and stop the round.
    BackOff(Vec<Pending>, Option<Duration>),
}

/// The [`Step`] an `outcome` means for `chunk`: a 413 splits a batch and drops a
/// lone event; any other refusal drops the batch.
pub(super) fn plan_answer(mut chunk: Vec<Pending>, outcome: Outcome) -> Step {
    match outcome {
        Outcome::Delivered => Step::Delivered(chunk),
        Outcome::Rejected => Step::Drop(DropReason::Rejected, chunk),
        Outcome::TooLarge if chunk.len() <= 1 => Step::Drop(DropReason::TooLarge, chunk),
        Outcome::TooLarge => {
            let second = chunk.split_off(chunk.len() / 2);
            Step::Split(chunk, second)
        }
        Outcome::Retry(after) => Step::BackOff(chunk, after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, created_at: i64, attempts: u32, bytes: usize) -> Pending {
        Pending {
            seq,
            id: format!("id{seq}"),
            created_at,
            payload: "x".repeat(bytes),
            attempts,
        }
    }

    fn seqs(events: &[Pending]) -> Vec<i64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn expired_events_are_dropped_by_reason_and_the_rest_is_sent_in_order() {
        let now = 1_000_000;
        let batch = vec![
            ev(1, now - 5000, 0, 10), // too old
            ev(2, now - 10, 10, 10),  // too many attempts
            ev(3, now - 10, 9, 10),
            ev(4, now, 0, 10),
        ];
        let plan = plan_batch(batch, now, 1000, 10, ByteLimits::default(), str::len);
        let drops: Vec<(DropReason, Vec<i64>)> =
            plan.drop.iter().map(|(r, e)| (*r, seqs(e))).collect();
        assert_eq!(
            drops,
            [(DropReason::Age, vec![1]), (DropReason::Attempts, vec![2])]
        );
        assert_eq!(seqs(&plan.send), [3, 4]);
    }

    #[test]
    fn a_batch_is_cut_to_the_destinations_byte_limits() {
        let limits = ByteLimits {
            per_event: Some(100),
            per_batch: Some(250),
        };
        let batch = vec![
            ev(1, 0, 0, 120),
            ev(2, 0, 0, 100),
            ev(3, 0, 0, 100),
            ev(4, 0, 0, 100),
        ];
        let plan = plan_batch(batch, 0, i64::MAX, 10, limits, str::len);
        assert_eq!(plan.drop.len(), 1);
        assert_eq!(plan.drop[0].0, DropReason::TooLarge);
        assert_eq!(seqs(&plan.drop[0].1), [1]);
        // Two fit under 250 bytes; the fourth waits for the next batch.
        assert_eq!(seqs(&plan.send), [2, 3]);
    }

    #[test]
    fn each_answer_means_one_step() {
        let chunk = || vec![ev(1, 0, 0, 1), ev(2, 0, 0, 1), ev(3, 0, 0, 1)];
        assert_eq!(
            plan_answer(chunk(), Outcome::Delivered),
            Step::Delivered(chunk())
        );
        assert_eq!(
            plan_answer(chunk(), Outcome::Rejected),
            Step::Drop(DropReason::Rejected, chunk())
        );
        let Step::Split(first, second) = plan_answer(chunk(), Outcome::TooLarge) else {
            panic!("a 413 splits a batch");
        };
        assert_eq!((seqs(&first), seqs(&second)), (vec![1], vec![2, 3]));
        assert_eq!(
            plan_answer(vec![ev(9, 0, 0, 1)], Outcome::TooLarge),
            Step::Drop(DropReason::TooLarge, vec![ev(9, 0, 0, 1)])
        );
        let after = Some(Duration::from_secs(30));
        assert_eq!(
            plan_answer(chunk(), Outcome::Retry(after)),
            Step::BackOff(chunk(), after)
        );
    }
}
