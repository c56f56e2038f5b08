//! The data of the embedded default spec, shipped inside the binary, so that `laxc train` with
//! no spec works from any folder: in the repository the files under `data/` are used; elsewhere
//! the embedded copies are written once into the user's cache and used from there.

use std::path::{Path, PathBuf};

/// The default spec's data files, by their path relative to the repository root.
const FILES: [(&str, &[u8]); 2] = [
    (
        "data/brown-excerpt-train.txt",
        include_bytes!("../../data/brown-excerpt-train.txt"),
    ),
    (
        "data/brown-excerpt-valid.txt",
        include_bytes!("../../data/brown-excerpt-valid.txt"),
    ),
];

/// The folder the default spec's relative data paths (`../data/...`) start from: the
/// repository's `specs/` where the working folder is the repository, else a folder in the
/// cache beside which the embedded data has been written.
pub fn spec_dir() -> Result<PathBuf, String> {
    let in_repository = Path::new("specs");
    if FILES.iter().all(|(f, _)| Path::new(f).is_file()) {
        return Ok(in_repository.to_path_buf());
    }
    let root = cache_root()?.join("laxc").join("default-spec");
    for (file, bytes) in FILES {
        let path = root.join(file);
        let current = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if !current {
            let parent = path.parent().expect("a file in a folder");
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            crate::files::write_atomically(&path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    // The folder must exist for `specs/../data/...` to resolve.
    let specs = root.join("specs");
    std::fs::create_dir_all(&specs)
        .map_err(|e| format!("cannot create {}: {e}", specs.display()))?;
    Ok(specs)
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`.
fn cache_root() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".cache"))
        .ok_or_else(|| {
            "outside the repository the default spec's data goes to a cache folder, but neither \
             XDG_CACHE_HOME nor HOME is set; run from the repository or give a spec"
                .to_string()
        })
}
