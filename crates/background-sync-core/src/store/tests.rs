use super::*;
use crate::models::{EntityRef, Priority};
use std::collections::{BTreeMap, HashMap};

/// Claim and settle one row at a time: what the drain does in rounds (`settle_and_claim`), by
/// the methods the drain itself calls, for tests that walk the store step by step.
impl Store {
    /// Atomically claim up to `limit` sendable rows: each the oldest open row of its entity,
    /// due, with every referenced temp id resolved; priority first, then enqueue order.
    pub(crate) async fn claim(
        &self,
        owner: &str,
        now: i64,
        limit: u32,
        max_wait_ms: i64,
    ) -> Result<Vec<Claimed>> {
        // Unit tests that do not exercise the lease claim as its first holder.
        // language=SQLite
        sqlx::query("INSERT INTO drain_lease (id, owner, expires_at, ttl_ms) VALUES (1, ?, ?, 0) ON CONFLICT DO NOTHING")
            .bind(owner)
            .bind(now + 60_000)
            .execute(&self.drain)
            .await?;
        Ok(self
            .settle_and_claim(owner, &[], true, now, limit, max_wait_ms)
            .await?
            .1)
    }

    /// Delivered: move the row to `delivered` and record the server id of a create.
    pub(crate) async fn complete(
        &self,
        seq: i64,
        owner: &str,
        status: u16,
        server_id: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let o = Outcome::Complete {
            seq,
            status,
            server_id: server_id.map(str::to_string),
            now,
            had_deps: true,
            body: None,
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }

    /// Transient failure: back to pending, due at `next_at`.
    pub(crate) async fn reschedule(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: &str,
    ) -> Result<bool> {
        let o = Outcome::Reschedule {
            seq,
            attempts,
            next_at,
            status,
            error: error.to_string(),
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }

    /// Permanent failure or retry limit: dead letter. Blocks only its own entity.
    pub(crate) async fn bury(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        status: Option<u16>,
        error: &str,
    ) -> Result<bool> {
        let o = Outcome::Bury {
            seq,
            attempts,
            status,
            error: error.to_string(),
            now: 0,
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("t.db"), None, None, Default::default())
        .await
        .unwrap();
    (dir, s)
}

fn p(entity: &str, prio: Priority, body: Option<&str>, temp: Option<&str>) -> Prepared {
    let body = body.map(str::to_string);
    let candidates = crate::idmap::candidates(
        "/x",
        body.as_deref().map(|b| serde_json::from_str(b).unwrap()).as_ref(),
        entity,
    )
    .into_iter()
    .collect();
    Prepared {
        id: uuid::Uuid::new_v4().to_string(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        caller_key: false,
        priority: prio,
        entity: EntityRef {
            kind: "k".into(),
            id: entity.into(),
        },
        method: "POST".into(),
        path: "/x".into(),
        headers: BTreeMap::new(),
        body,
        temp_id: temp.map(str::to_string),
        candidates,
        coalesce: None,
    }
}

const T0: i64 = 1_000_000;
const MAX_WAIT: i64 = 10_000_000;

#[tokio::test]
async fn claim_takes_heads_by_priority_then_fifo() {
    let (_d, s) = store().await;
    let items = [
        p("a", Priority::Low, None, None),
        p("a", Priority::Low, None, None),
        p("b", Priority::Normal, None, None),
        p("c", Priority::High, None, None),
        p("d", Priority::Normal, None, None),
    ];
    let e = s.enqueue(items.to_vec(), T0, 100).await.unwrap().enqueued;
    let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    let seqs: Vec<i64> = got.iter().map(|c| c.seq).collect();
    // c (high), b, d (normal, FIFO), a's head (low); a's second row waits for its head.
    assert_eq!(seqs, vec![e[3].seq, e[2].seq, e[4].seq, e[0].seq]);
    assert!(
        s.claim("me", T0, 10, MAX_WAIT).await.unwrap().is_empty(),
        "nothing else is sendable"
    );
    // Delivering a's head makes its successor the head.
    assert!(s.complete(e[0].seq, "me", 200, None, T0).await.unwrap());
    let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![e[1].seq]);
}

#[tokio::test]
async fn later_high_priority_lifts_its_entity() {
    let (_d, s) = store().await;
    let e = s
        .enqueue(
            vec![
                p("a", Priority::Low, None, None),
                p("b", Priority::Normal, None, None),
                p("a", Priority::Critical, None, None),
            ],
            T0,
            100,
        )
        .await
        .unwrap()
        .enqueued;
    let got = s.claim("me", T0, 1, MAX_WAIT).await.unwrap();
    assert_eq!(got[0].seq, e[0].seq, "a's first row inherits critical");
}

#[tokio::test]
async fn backoff_dead_letters_and_clock_jumps() {
    let (_d, s) = store().await;
    let e = s
        .enqueue(
            vec![
                p("a", Priority::Normal, None, None),
                p("a", Priority::Normal, None, None),
                p("b", Priority::Normal, None, None),
            ],
            T0,
            100,
        )
        .await
        .unwrap()
        .enqueued;
    let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(s
        .reschedule(e[0].seq, "me", 1, T0 + 5_000, Some(503), "HTTP 503")
        .await
        .unwrap());
    assert!(s.bury(e[2].seq, "me", 1, Some(422), "HTTP 422").await.unwrap());
    assert!(
        s.claim("me", T0 + 4_999, 10, MAX_WAIT).await.unwrap().is_empty(),
        "not due yet; b is dead"
    );
    assert_eq!(
        s.claim("me", T0 + 5_000, 10, MAX_WAIT).await.unwrap()[0].seq,
        e[0].seq
    );
    assert!(s
        .reschedule(e[0].seq, "me", 2, T0 + 5_000_000_000, Some(503), "x")
        .await
        .unwrap());
    // The wall clock jumped back: a due time beyond any wait we schedule counts as due.
    assert_eq!(s.claim("me", T0, 10, MAX_WAIT).await.unwrap()[0].seq, e[0].seq);
    let c = s.counts().await.unwrap();
    assert_eq!((c.pending, c.in_flight, c.dead), (1, 1, 1));
    assert_eq!(s.next_due().await.unwrap(), None);
}

#[tokio::test]
async fn unresolved_temp_ids_wait_and_resolve() {
    let (_d, s) = store().await;
    let e = s
        .enqueue(
            vec![
                p("v1", Priority::Low, Some(r#"{"a":1}"#), Some("tmp-1")),
                p("n1", Priority::Critical, Some(r#"{"v":"tmp-1"}"#), None),
            ],
            T0,
            100,
        )
        .await
        .unwrap()
        .enqueued;
    assert_eq!(s.counts().await.unwrap().blocked, 1);
    let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    assert_eq!(got.len(), 1, "the note waits for the visit's create");
    assert!(s.complete(e[0].seq, "me", 201, Some("srv_9"), T0).await.unwrap());
    let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    assert_eq!(got[0].seq, e[1].seq);
    assert_eq!(got[0].mapping.get("tmp-1").map(String::as_str), Some("srv_9"));
    assert_eq!(s.server_id_for("tmp-1").await.unwrap().as_deref(), Some("srv_9"));
}

#[tokio::test]
async fn crash_recovery_and_lease() {
    let (_d, s) = store().await;
    s.enqueue(
        vec![
            p("a", Priority::Normal, None, None),
            p("b", Priority::Normal, None, None),
        ],
        T0,
        100,
    )
    .await
    .unwrap();
    assert!(s.acquire_lease("dead-drainer", T0, 1_000).await.unwrap());
    assert_eq!(s.claim("dead-drainer", T0, 10, MAX_WAIT).await.unwrap().len(), 2);
    // Another drainer cannot take a live lease...
    assert!(!s.acquire_lease("next", T0 + 999, 1_000).await.unwrap());
    // ...but can once it expired, and then recovers the orphaned rows.
    assert!(s.acquire_lease("next", T0 + 1_000, 1_000).await.unwrap());
    assert_eq!(s.recover_in_flight().await.unwrap(), 2);
    assert!(
        !s.complete(1, "dead-drainer", 200, None, T0).await.unwrap(),
        "the old owner's late answer is ignored"
    );
    assert!(
        s.claim("dead-drainer", T0 + 1_000, 10, MAX_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "a drainer that lost the lease cannot claim (fencing)"
    );
    assert_eq!(s.claim("next", T0 + 1_000, 10, MAX_WAIT).await.unwrap().len(), 2);
    // A lease expiring implausibly far ahead (clock jumped back) is treated as expired.
    s.release_lease("next").await.unwrap();
    assert!(s.acquire_lease("x", T0 + 10_000_000, 1_000).await.unwrap());
    assert!(s.acquire_lease("y", T0, 1_000).await.unwrap());
    assert!(s.renew_lease("y", T0 + 500, 1_000).await.unwrap());
    assert!(!s.renew_lease("x", T0 + 500, 1_000).await.unwrap());
}

#[tokio::test]
async fn prune_drops_old_delivered_rows_only() {
    let (_d, s) = store().await;
    let e = s
        .enqueue(
            vec![
                p("a", Priority::Normal, None, None),
                p("b", Priority::Normal, None, None),
            ],
            T0,
            100,
        )
        .await
        .unwrap()
        .enqueued;
    s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
    s.complete(e[0].seq, "me", 200, None, T0).await.unwrap();
    s.complete(e[1].seq, "me", 200, None, T0 + 10_000).await.unwrap();
    assert_eq!(s.prune(T0 + 10_001, 5_000).await.unwrap(), 1);
    // language=SQLite
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivered")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn discarding_an_unresolved_create_surfaces_its_dependents() {
    let (_d, s) = store().await;
    let c = p("v1", Priority::Normal, None, Some("tmp-1"));
    let id = c.id.clone();
    s.enqueue(
        vec![c, p("n1", Priority::Normal, Some(r#"{"v":"tmp-1"}"#), None)],
        T0,
        100,
    )
    .await
    .unwrap();
    assert_eq!(s.discard(&id, true, 0).await.unwrap().len(), 1);
    let c = s.counts().await.unwrap();
    assert_eq!((c.pending, c.dead), (0, 1));
    // A new reference to the discarded temp id is refused.
    let e = s
        .enqueue(
            vec![p("n2", Priority::Normal, Some(r#"{"v":"tmp-1"}"#), None)],
            T0,
            100,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "conflict");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, failure_persistence: None, ..Default::default() })]

    /// Whatever the mix of entities and priorities: each entity is delivered in enqueue
    /// order, and every claim takes a head of the highest (inherited) priority waiting.
    #[test]
    fn claims_respect_entity_order_and_priority(
        ops in proptest::collection::vec((0usize..5, 0i64..4), 1..40),
        batch in proptest::prelude::any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_d, s) = store().await;
            let items: Vec<Prepared> = ops
                .iter()
                .map(|(e, pr)| p(&format!("e{e}"), Priority::from_rank(*pr), None, None))
                .collect();
            if batch {
                s.enqueue(items.clone(), T0, 1_000).await.unwrap();
            } else {
                for it in &items {
                    s.enqueue(vec![it.clone()], T0, 1_000).await.unwrap();
                }
            }
            let mut last_seq: HashMap<String, i64> = HashMap::new();
            let mut delivered = 0;
            loop {
                let best: Option<i64> = sqlx::query_scalar(
                    // language=SQLite
                    "SELECT MAX(priority) FROM outbox WHERE is_head = 1 AND state = 'pending'",
                )
                .fetch_one(&s.pool)
                .await
                .unwrap();
                let got = s.claim("me", T0, 1, MAX_WAIT).await.unwrap();
                let Some(c) = got.into_iter().next() else { break };
                assert_eq!(Some(c.priority.rank()), best, "a head of the highest priority goes first");
                // language=SQLite
                let entity: String = sqlx::query_scalar("SELECT entity_id FROM outbox WHERE seq = ?")
                    .bind(c.seq)
                    .fetch_one(&s.pool)
                    .await
                    .unwrap();
                if let Some(prev) = last_seq.insert(entity.clone(), c.seq) {
                    assert!(prev < c.seq, "{entity}: seq {} after {prev}", c.seq);
                }
                assert!(s.complete(c.seq, "me", 200, None, T0).await.unwrap());
                delivered += 1;
            }
            assert_eq!(delivered, ops.len(), "everything delivered, nothing stuck");
        });
    }
}
