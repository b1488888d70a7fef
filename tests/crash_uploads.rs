//! Crash suite for file uploads: child processes queue files (copied, fsynced) with the record
//! that references each, and drain, and are SIGKILLed at random points — mid-copy, mid-upload,
//! after the storage host stored a file but before the client recorded it. Afterwards every
//! acknowledged upload is stored exactly once, every acknowledged record is applied once and
//! points at its file, nothing is stuck in flight, and no half-written copy is left behind.
//!
//! Cycles: `BGSYNC_UPLOAD_CRASH_CYCLES` (default 20).

mod common;

use background_sync_core::{BackgroundSync, DrainOptions, NewUpload, StopReason, UploadDestination};
use bgsync_reference_server::StorageFaults;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BGSYNC_UPLOAD_CRASH_DB";

#[test]
fn upload_crash_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let files = std::path::PathBuf::from(std::env::var("BGSYNC_UPLOAD_CRASH_FILES").unwrap());
    let cycle: u64 = std::env::var("BGSYNC_CRASH_CYCLE").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bs = BackgroundSync::open(&db).await.unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cycle);
        let out = std::io::stdout();
        for i in 0u64.. {
            // A photo of 1 KiB..2 MiB, queued (copied) before its record.
            let size = rng.gen_range(1_024..2 * 1024 * 1024);
            let path = files.join(format!("c{cycle}-{i}.jpg"));
            let mut buf = vec![0u8; size];
            rng.fill(&mut buf[..]);
            std::fs::write(&path, &buf).unwrap();
            let up = bs
                .enqueue_upload(NewUpload {
                    file_path: path.to_string_lossy().into_owned(),
                    copy: true,
                    content_type: "image/jpeg".into(),
                    file_name: None,
                    destination: UploadDestination::Signed,
                    priority: Default::default(),
                    entity: None,
                    placeholder: None,
                    idempotency_key: None,
                })
                .await
                .unwrap();
            let _ = std::fs::remove_file(&path);
            writeln!(out.lock(), "UPLOAD {} {}", up.id, up.size).unwrap();
            let rec = format!("c{cycle}-{i}");
            let m = bs
                .enqueue(mutation(
                    "PUT",
                    &format!("/photos/{rec}"),
                    Some(json!({"url": up.placeholder})),
                    "photo",
                    &rec,
                ))
                .await
                .unwrap();
            let mut o = out.lock();
            writeln!(o, "RECORD {} {}", rec, up.id).unwrap();
            o.flush().unwrap();
            drop(o);
            let _ = m;
            if rng.gen_bool(0.5) {
                let _ = bs
                    .drain(DrainOptions {
                        budget: Duration::from_millis(rng.gen_range(50..600)),
                        ..Default::default()
                    })
                    .await;
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_loses_and_duplicates_nothing() {
    let cycles: u64 = std::env::var("BGSYNC_UPLOAD_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let server = server(FaultConfig {
        seed: 5,
        error_rate: 0.05,
        commit_then_drop_rate: 0.05,
        ..Default::default()
    })
    .await;
    server.set_storage_faults(StorageFaults {
        seed: 6,
        error_rate: 0.05,
        drop_rate: 0.05,
        commit_then_drop_rate: 0.05,
        bytes_per_sec: 8_000_000, // uploads take long enough to be killed mid-body
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.base_url);
    cfg.lease_ttl_ms = 1_000;
    cfg.uploads.storage_origins = vec![server.storage_url.clone()];
    let bs = engine(&dir, cfg).await;
    let db = bs.path().to_str().unwrap().to_string();
    bs.close().await;
    drop(bs);

    let exe = std::env::current_exe().unwrap();
    let mut uploads: HashMap<String, u64> = HashMap::new(); // acknowledged upload id → size
    let mut records: HashMap<String, String> = HashMap::new(); // acknowledged record → upload id
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(77);
    let start = Instant::now();
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "upload_crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &db)
            .env("BGSYNC_UPLOAD_CRASH_FILES", files.path())
            .env("BGSYNC_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..700))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // The harness prints "test upload_crash_child ... " before the child's first line.
            let line = match (line.find("UPLOAD "), line.find("RECORD ")) {
                (Some(i), _) | (None, Some(i)) => &line[i..],
                _ => continue,
            };
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("UPLOAD"), Some(id), Some(size)) => {
                    uploads.insert(id.to_string(), size.parse().unwrap());
                }
                (Some("RECORD"), Some(rec), Some(id)) => {
                    records.insert(rec.to_string(), id.to_string());
                }
                _ => {}
            }
        }
    }
    let crash_time = start.elapsed();

    let bs = BackgroundSync::open(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = bs
            .drain(DrainOptions {
                budget: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .unwrap();
        let st = bs.status().await.unwrap();
        if r.stop_reason == StopReason::Empty && st.uploads_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "could not drain after the crashes: {r:?} {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = bs.status().await.unwrap();
    assert_eq!(
        (
            st.pending,
            st.in_flight,
            st.dead,
            st.uploads_pending,
            st.uploads_dead
        ),
        (0, 0, 0, 0, 0),
        "{st:?}"
    );

    let objects: HashMap<String, bgsync_reference_server::StoredObject> =
        server.objects().into_iter().map(|o| (o.key.clone(), o)).collect();
    for (id, size) in &uploads {
        let o = objects
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged upload {id} lost"));
        assert_eq!(o.size, *size, "upload {id} stored whole");
    }
    let stats = server.storage_stats();
    let rewrites: u64 = objects.values().map(|o| o.writes - 1).sum();
    assert!(
        rewrites <= stats.injected_commit_then_drops + cycles,
        "re-stored only after a lost response or a kill"
    );
    let log = server.applied_log().await;
    let mut keys = HashSet::new();
    for e in &log {
        assert!(
            keys.insert(e.idempotency_key.clone()),
            "record applied twice: {}",
            e.path
        );
    }
    assert!(
        records.values().all(|id| uploads.contains_key(id)),
        "every record's upload was acknowledged first"
    );
    let state = server.state().await;
    for (rec, id) in &records {
        let got = &state["photos"][rec.as_str()]["url"];
        assert_eq!(
            got,
            &json!(objects[id].url),
            "record {rec} lost or not pointing at its file"
        );
    }
    assert!(
        !state.to_string().contains("att_"),
        "no placeholder reached the server"
    );
    // Copies: none of an acknowledged (now finished) upload remains; what may remain are copies
    // of enqueues killed before they committed (never acknowledged; swept after an hour).
    let copies = std::path::Path::new(&db).with_file_name("outbox.db-uploads");
    let leftovers: Vec<String> = std::fs::read_dir(&copies)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let stray: Vec<&String> = leftovers
        .iter()
        .filter(|f| uploads.contains_key(f.trim_end_matches(".part")))
        .collect();
    assert!(
        stray.is_empty(),
        "copies of finished uploads left behind: {stray:?}"
    );
    println!(
        "upload crash suite: {cycles} SIGKILL cycles in {crash_time:?}; {} uploads and {} records acknowledged, \
         all stored/applied once ({} storage PUTs, {} drops, {} lost responses, {} rewrites); \
         {} copies of never-acknowledged enqueues left (swept after an hour)",
        uploads.len(),
        records.len(),
        stats.puts,
        stats.injected_drops,
        stats.injected_commit_then_drops,
        rewrites,
        leftovers.len() - stray.len(),
    );
    server.shutdown().await;
}
