//! The plugin's durable copies of files queued for upload (`<database>-uploads/<upload id>`):
//! making one before the enqueue that points at it commits, and sweeping the ones nothing will
//! read again. Filesystem only; which uploads still need their copy is the store's answer.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Copy a file and make the copy durable before the enqueue that points at it commits.
pub(crate) async fn copy_durably(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let io = |e: std::io::Error| Error::storage(format!("cannot copy {} for upload: {e}", from.display()), e);
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let partial = to.with_extension("part");
    tokio::fs::copy(from, &partial).await.map_err(io)?;
    tokio::fs::File::open(&partial)
        .await
        .map_err(io)?
        .sync_all()
        .await
        .map_err(io)?;
    tokio::fs::rename(&partial, to).await.map_err(io)?;
    // The rename itself must reach the disk too.
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// Delete the copies in `dir` nothing will read again. `owned`: the uploads that own a copy,
/// id → still needed (not finished). A finished or discarded upload's copy goes at once (a
/// process killed between recording the result and deleting it); a copy no upload owns goes
/// once older than `orphan_age` (killed between the copy and the enqueue's commit, so never
/// acknowledged; a younger one may be an enqueue in progress). Returns how many were removed.
pub(crate) fn sweep_copies(dir: &Path, owned: &HashMap<String, bool>, orphan_age: Duration) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name.strip_suffix(".part").unwrap_or(&name);
        if owned.get(id) == Some(&true) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= orphan_age);
        let finished = owned.contains_key(id) && !name.ends_with(".part");
        if (finished || old) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
