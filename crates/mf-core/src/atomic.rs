//! Atomic file writes, the one way every MeanFlow Edge crate writes a file: the bytes go to a
//! temp file in the target's folder, are flushed to the disk, and replace the target by a
//! rename; then the folder itself is synced. A reader sees the old file or the whole new one,
//! and a failure (a full disk, a missing folder, a crash) leaves neither a partial file nor
//! the temp file.
use std::format;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow, ensure};

/// Writes `bytes` to `path` atomically; the folder must exist.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = folder(path);
    ensure!(
        dir.is_dir(),
        "cannot write {}: folder {} does not exist",
        path.display(),
        dir.display()
    );
    // The temp file is removed when `tmp` drops, on every early return below.
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mf-").suffix(".tmp");
    // A temp file is private (0600) by default; the written file gets what `std::fs::write`
    // would give it: 0666 less the umask.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).with_context(|| {
        format!(
            "cannot write {}: no temp file in {}",
            path.display(),
            dir.display()
        )
    })?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A failed rename hands the temp file back inside the error; dropping it removes it.
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    sync_folder(dir)
}

/// Flushes a folder's entries (a rename into it, a new file) to the disk.
pub fn sync_folder(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// The folder a path is written into (`.` for a bare file name).
pub fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write(&path, b"old").unwrap();
        write(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the written file remains");
    }

    #[cfg(unix)]
    #[test]
    fn a_written_file_gets_the_permissions_a_plain_write_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("ours"), dir.path().join("plain"));
        write(&ours, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(&dir.path().join("no/such/a.bin"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }

    #[test]
    fn a_failed_rename_keeps_the_target_and_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: the rename fails.
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"keep").unwrap();
        assert!(write(&target, b"x").is_err());
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"keep");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left beside the target");
    }
}
