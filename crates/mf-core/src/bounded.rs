//! Bounded file reads: a model, a config or a dataset file is read whole, but never more than
//! a limit, so a path like `/dev/zero` or a runaway file is an error naming the limit instead
//! of a read that never ends or an allocation that aborts.
use std::io::Read;
use std::path::Path;
use std::vec::Vec;

use anyhow::{Context, ensure};

/// Reads all of `path`, refusing files (or streams) of more than `limit` bytes; `what` names the
/// file in errors ("model", "config").
pub fn read(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .with_context(|| std::format!("cannot read {what} {}", path.display()))?;
    ensure!(
        bytes.len() as u64 <= limit,
        "{what} {} is larger than the {limit} bytes accepted",
        path.display()
    );
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, what: &str) -> anyhow::Result<std::string::String> {
    std::string::String::from_utf8(read(path, limit, what)?)
        .with_context(|| std::format!("{what} {} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_at_the_limit() {
        let err = read(Path::new("/dev/zero"), 1 << 20, "model").unwrap_err();
        assert!(
            std::format!("{err:#}").contains("larger than the 1048576 bytes"),
            "{err:#}"
        );
    }

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(read_text(&path, 6, "config").unwrap(), "a = 1\n");
        assert!(read_text(&path, 5, "config").is_err());
        assert!(read(&dir.path().join("missing"), 5, "config").is_err());
    }
}
