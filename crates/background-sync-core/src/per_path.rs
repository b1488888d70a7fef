//! One shared value per database file in this process: every handle on the file gets the same
//! one (keyed by the canonical path), and it goes with the last handle that holds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub(crate) struct PerPath<T> {
    values: OnceLock<Mutex<HashMap<PathBuf, Weak<T>>>>,
}

impl<T: Default> PerPath<T> {
    pub(crate) const fn new() -> Self {
        Self {
            values: OnceLock::new(),
        }
    }

    /// The value for `path`, made on first use.
    pub(crate) fn get(&self, path: &Path) -> Arc<T> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut values = self
            .values
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(v) = values.get(&key).and_then(Weak::upgrade) {
            return v;
        }
        values.retain(|_, v| v.strong_count() > 0);
        let v = Arc::new(T::default());
        values.insert(key, Arc::downgrade(&v));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_of_one_file_share_a_value_until_the_last_goes() {
        static VALUES: PerPath<Mutex<u32>> = PerPath::new();
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        std::fs::write(&a, b"").unwrap();
        let first = VALUES.get(&a);
        *first.lock().unwrap() = 7;
        // The same file by another spelling of its path.
        let again = VALUES.get(&dir.path().join(".").join("a.db"));
        assert_eq!(*again.lock().unwrap(), 7);
        assert_eq!(*VALUES.get(&dir.path().join("b.db")).lock().unwrap(), 0);
        drop((first, again));
        assert_eq!(
            *VALUES.get(&a).lock().unwrap(),
            0,
            "kept after its last holder went"
        );
    }
}
