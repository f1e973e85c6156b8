//! The lease rules of the job queue, with explicit times (no sleeps): claim stamps owner and lease, the heartbeat
//! extends only a held lease, expiry requeues with the loss counted, a stale owner's completion or failure is
//! refused, N losses dead-letter, a dead owner's jobs are released, and an unknown kind is an error naming its job.

use super::sql::{params, Exec};
use super::tests::{arrived, header, job};
use super::*;

fn store_with(n: usize) -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_in(dir.path()).unwrap();
    s.record_instance(&arrived("a", "aa"), &header("1", "S")).unwrap();
    let sid = s.series_id("S").unwrap().unwrap();
    for i in 0..n {
        assert!(s.enqueue(&job(&format!("k{i}"), sid)).unwrap());
    }
    (dir, s, sid)
}

fn lease(owner: &str) -> Lease {
    Lease { owner: owner.into(), secs: 30.0 }
}

const T: f64 = 4_000_000_000.0; // far after every job's next_at (made with now())

#[test]
fn a_claim_stamps_owner_lease_and_attempt() {
    let (_d, s, _) = store_with(1);
    let j = s.claim_at(&[JobKind::Convert], &lease("a"), T).unwrap().expect("claimed");
    assert_eq!((j.state.as_str(), j.attempts, j.owner.as_deref()), ("running", 1, Some("a")));
    assert_eq!(j.lease_until, Some(T + 30.0));
    assert!(s.claim_at(&[JobKind::Convert], &lease("b"), T + 1.0).unwrap().is_none(), "held: not claimed twice");
    assert!(s.claim_at(&[JobKind::Encode], &lease("b"), T).unwrap().is_none(), "other kinds only");
}

#[test]
fn the_heartbeat_extends_only_held_leases() {
    let (_d, s, _) = store_with(2);
    let a = s.claim_at(&[JobKind::Convert], &lease("a"), T).unwrap().unwrap();
    let b = s.claim_at(&[JobKind::Convert], &lease("b"), T).unwrap().unwrap();
    assert_eq!(s.heartbeat_at("a", 30.0, T + 20.0).unwrap(), 1, "only a's job");
    assert_eq!(s.job(a.id).unwrap().lease_until, Some(T + 50.0));
    assert_eq!(s.job(b.id).unwrap().lease_until, Some(T + 30.0));
    // Past b's lease: b's job is not renewed (it is lost), a's still held one is.
    assert_eq!(s.expire_leases_at(T + 40.0, 3).unwrap(), (1, 0));
    assert_eq!(s.heartbeat_at("b", 30.0, T + 41.0).unwrap(), 0);
    assert_eq!(s.job(b.id).unwrap().state, "pending");
    assert_eq!(s.heartbeat_at("a", 30.0, T + 45.0).unwrap(), 1);
    assert_eq!(s.expire_leases_at(T + 60.0, 3).unwrap(), (0, 0), "a's renewed lease holds until T + 75");
    // A lease past its end is not renewed even before anyone expired it.
    assert_eq!(s.heartbeat_at("a", 30.0, T + 76.0).unwrap(), 0);
}

#[test]
fn expiry_requeues_with_the_loss_counted_and_the_stale_owner_records_nothing() {
    let (_d, s, _) = store_with(1);
    let stale = s.claim_at(&[JobKind::Convert], &lease("a"), T).unwrap().unwrap();
    assert_eq!(s.expire_leases_at(T + 29.0, 3).unwrap(), (0, 0), "not yet");
    assert_eq!(s.expire_leases_at(T + 31.0, 3).unwrap(), (1, 0));
    let row = s.job(stale.id).unwrap();
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 1), "the attempt stays counted");
    assert!(row.last_error.as_deref().unwrap_or("").contains("lease expired"), "{row:?}");
    // Before anyone else claims it, the stale owner's result is refused (lease gone).
    assert_eq!(s.complete_at(&stale, &Completion::default(), T + 32.0).unwrap(), Recording::LeaseLost);
    let fresh = s.claim_at(&[JobKind::Convert], &lease("b"), T + 33.0).unwrap().unwrap();
    assert_eq!(fresh.attempts, 2);
    // After b claimed it: a's completion and failure are refused and change nothing.
    let c = Completion { next: vec![job("follow-up", fresh.series_ref.unwrap())], ..Completion::default() };
    assert_eq!(s.complete_at(&stale, &c, T + 34.0).unwrap(), Recording::LeaseLost);
    assert_eq!(s.fail_at(&stale, "late", None, T + 34.0).unwrap(), Recording::LeaseLost);
    assert!(s.job_by_key("follow-up").unwrap().is_none(), "nothing the stale owner produced is recorded");
    let row = s.job(fresh.id).unwrap();
    assert_eq!((row.state.as_str(), row.owner.as_deref()), ("running", Some("b")));
    // The same owner with an older claim (attempt 1) is refused too: the attempt is the fencing number.
    let same_owner_old = Job { owner: Some("b".into()), ..stale.clone() };
    assert_eq!(s.complete_at(&same_owner_old, &c, T + 35.0).unwrap(), Recording::LeaseLost);
    // The holder records.
    assert_eq!(s.complete_at(&fresh, &c, T + 35.0).unwrap(), Recording::Recorded);
    assert_eq!(s.job(fresh.id).unwrap().state, "done");
    assert!(s.job_by_key("follow-up").unwrap().is_some());
    // A holder past its lease (nobody expired it yet) is refused as well.
    let f = s.claim_at(&[JobKind::Convert], &lease("c"), T + 36.0).unwrap().unwrap();
    assert_eq!(s.fail_at(&f, "x", Some(T + 99.0), T + 67.0).unwrap(), Recording::LeaseLost);
}

#[test]
fn n_lost_leases_dead_letter_the_job_with_a_reason_and_fail_its_series() {
    let (_d, s, sid) = store_with(1);
    // The series holds the jobs' content key ("k"), so a dead job fails it.
    s.lock().execute("UPDATE series SET content_key = 'k', state = 'converted' WHERE id = ?1", &params![sid]).unwrap();
    for round in 0..3 {
        let t = T + 100.0 * f64::from(round);
        let j = s.claim_at(&[JobKind::Convert], &lease("a"), t).unwrap().expect("claimable again");
        assert_eq!(j.attempts, i64::from(round) + 1);
        let (requeued, dead) = s.expire_leases_at(t + 31.0, 3).unwrap();
        assert_eq!((requeued, dead), if round < 2 { (1, 0) } else { (0, 1) }, "round {round}");
    }
    let j = s.jobs_list(Some(JobState::Dead), 10).unwrap().pop().expect("dead");
    assert!(j.last_error.as_deref().unwrap_or("").contains("lost its worker 3 time(s)"), "{j:?}");
    assert_eq!(j.series_state.as_deref(), Some("failed"));
    assert!(s.claim_at(&[JobKind::Convert], &lease("a"), T + 1000.0).unwrap().is_none());
}

#[test]
fn a_dead_owners_jobs_are_released_at_once_and_others_are_kept() {
    let (_d, s, _) = store_with(2);
    let a = s.claim_at(&[JobKind::Convert], &lease("a"), T).unwrap().unwrap();
    let b = s.claim_at(&[JobKind::Convert], &lease("b"), T).unwrap().unwrap();
    let mut owners = s.running_owners().unwrap();
    owners.sort();
    assert_eq!(owners, ["a", "b"]);
    assert_eq!(s.release_owner_at("a", T + 1.0, 3).unwrap(), (1, 0));
    assert_eq!(s.job(a.id).unwrap().state, "pending");
    assert_eq!(s.job(b.id).unwrap().state, "running", "a live owner's job is never taken");
    assert_eq!(s.complete_at(&a, &Completion::default(), T + 2.0).unwrap(), Recording::LeaseLost);
}

#[test]
fn a_job_running_before_leases_existed_counts_as_expired() {
    let (_d, s, _) = store_with(1);
    let j = s.claim_at(&[JobKind::Convert], &lease("a"), T).unwrap().unwrap();
    s.lock().execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = ?1", &params![j.id]).unwrap();
    assert_eq!(s.expire_leases_at(T, 3).unwrap(), (1, 0));
}

#[test]
fn an_unknown_kind_is_never_claimed_and_reads_as_an_error_naming_the_job() {
    let (_d, s, _) = store_with(1);
    s.lock()
        .execute(
            "INSERT INTO jobs (kind, key, payload, state, priority, attempts, next_at, created_at, updated_at) \
             VALUES ('transcode', 'x', '{}', 'pending', 99, 0, 0, 0, 0)",
            &[],
        )
        .unwrap();
    let id: i64 = s.lock().query_row("SELECT id FROM jobs WHERE key = 'x'", &[]).unwrap().get(0).unwrap();
    let j = s.claim_at(&JobKind::ALL, &lease("a"), T).unwrap().expect("the known job");
    assert_eq!(j.kind, JobKind::Convert);
    let e = s.job(id).unwrap_err().to_string();
    assert!(e.contains(&format!("job {id}")) && e.contains("`transcode`") && e.contains("newer"), "{e}");
}

#[test]
fn a_claimed_job_whose_payload_does_not_fit_its_kind_is_dead_lettered_with_the_reason() {
    let (_d, s, _) = store_with(0);
    s.lock()
        .execute(
            "INSERT INTO jobs (kind, key, payload, state, priority, attempts, next_at, created_at, updated_at) \
             VALUES ('encode', 'bad', '{\"content_key\": \"k\"}', 'pending', 0, 0, 0, 0, 0)",
            &[],
        )
        .unwrap();
    assert!(s.claim_at(&[JobKind::Encode], &lease("a"), T).unwrap().is_none());
    let row: (String, String) = s
        .lock()
        .query_row("SELECT state, last_error FROM jobs WHERE key = 'bad'", &[])
        .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
        .unwrap();
    assert_eq!(row.0, "dead");
    assert!(row.1.contains("encode payload cannot be read") && row.1.contains("volume"), "{}", row.1);
}
