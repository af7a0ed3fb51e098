//! Reading session ids from the legacy file stores (read-only; nothing here writes).
//!
//! A source is a data directory holding `chats/` and/or `conversation_transcripts/`:
//!
//! - `chats/chat_{session_id}.json`: the id is the file name between `chat_` and `.json`;
//! - `conversation_transcripts/{name}.json`: the id is the file's `"session_id"` string when
//!   present, else the file stem.
//!
//! Every file must be valid JSON; a file that is not, whose `session_id` is not a string, or
//! whose id is not a valid session id, is an error (with its path) and the scan goes on.
//! A source must lie inside one of the allowed roots after resolving `..` and links
//! ([`Roots::resolve`]), and nothing read may lie outside it: the real path of every directory
//! and file visited is checked to stay under the (resolved) source, so a `chats/` that is a
//! link out of the root is refused with an error naming it. Symbolic links to files are not
//! followed at all (reported as errors), and files are opened with `O_NOFOLLOW`, so a file
//! swapped for a link after the check is not read either.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::session_id::SessionIds;

pub use crate::records::job::FileError;

/// What a scan of the sources found.
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// Unique session ids, sorted.
    pub ids: BTreeSet<String>,
    /// Files read (valid or not).
    pub files: u64,
    /// Unreadable files.
    pub errors: Vec<FileError>,
    /// How ids are read: the same as at every other entry point, so a legacy file naming a
    /// UUID in upper case is assigned under the id checks will look up.
    pub session_ids: SessionIds,
}

impl Found {
    fn error(&mut self, path: &Path, error: impl Into<String>) {
        self.errors.push(FileError {
            path: path.display().to_string(),
            error: error.into(),
        });
    }

    /// An empty result, reading ids with `session_ids`.
    pub fn new(session_ids: SessionIds) -> Self {
        Self {
            session_ids,
            ..Self::default()
        }
    }

    fn add(&mut self, path: &Path, id: &str) {
        match self.session_ids.parse(id) {
            Ok(id) => {
                self.ids.insert(id.as_str().to_owned());
            }
            Err(e) => self.error(path, format!("{e} ({id:?})")),
        }
    }

    /// Adds explicit ids (invalid ones become errors named `session_ids[i]`).
    pub fn add_ids<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for (i, id) in ids.into_iter().enumerate() {
            match self.session_ids.parse(id) {
                Ok(id) => {
                    self.ids.insert(id.as_str().to_owned());
                }
                Err(e) => self.errors.push(FileError {
                    path: format!("session_ids[{i}]"),
                    error: format!("{e} ({id:?})"),
                }),
            }
        }
    }
}

/// The directories sources may be taken from (`GATEHOUSE_BACKFILL_ROOTS`).
#[derive(Debug, Clone, Default)]
pub struct Roots(Vec<PathBuf>);

/// Why a source was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No roots are configured.
    #[error("no backfill roots are configured (GATEHOUSE_BACKFILL_ROOTS)")]
    NoRoots,
    /// The source does not exist or cannot be resolved.
    #[error("source {0:?} does not exist or cannot be read")]
    Missing(String),
    /// The source resolves outside every root.
    #[error("source {0:?} is not inside an allowed backfill root")]
    OutsideRoots(String),
    /// The source holds neither `chats/` nor `conversation_transcripts/`.
    #[error("source {0:?} holds neither chats/ nor conversation_transcripts/")]
    NotASource(String),
    /// More sources than one job takes.
    #[error("{0} sources: a job reads at most {MAX_SOURCES} (start several jobs)")]
    TooMany(usize),
    /// One source named twice (as resolved: `/data/a` and `/data/./a` are one).
    #[error("sources[{index}] is sources[{first}] again ({path}): name each source once")]
    Repeated {
        /// Where it is named again.
        index: usize,
        /// Where it is named first.
        first: usize,
        /// The source, resolved.
        path: String,
    },
}

/// Sources one job reads at most: its record lists them, and so does every answer about it.
pub const MAX_SOURCES: usize = 100;

/// Refuses a job's resolved sources ([`Roots::resolve`]) when there are more than
/// [`MAX_SOURCES`] or one is named twice.
pub fn check_list(resolved: &[PathBuf]) -> Result<(), SourceError> {
    if resolved.len() > MAX_SOURCES {
        return Err(SourceError::TooMany(resolved.len()));
    }
    let mut seen = std::collections::HashMap::with_capacity(resolved.len());
    for (index, path) in resolved.iter().enumerate() {
        if let Some(&first) = seen.get(path) {
            return Err(SourceError::Repeated {
                index,
                first,
                path: path.display().to_string(),
            });
        }
        seen.insert(path, index);
    }
    Ok(())
}

impl Roots {
    /// Roots from paths; the ones that do not exist are kept out (and reported by config).
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        Self(
            paths
                .into_iter()
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .collect(),
        )
    }

    /// Whether any root is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves `source` (`..` and links included) and checks it lies inside a root.
    pub fn resolve(&self, source: &str) -> Result<PathBuf, SourceError> {
        if self.0.is_empty() {
            return Err(SourceError::NoRoots);
        }
        let resolved =
            std::fs::canonicalize(source).map_err(|_| SourceError::Missing(source.to_owned()))?;
        if !self.0.iter().any(|root| resolved.starts_with(root)) {
            return Err(SourceError::OutsideRoots(source.to_owned()));
        }
        let has = |name: &str| resolved.join(name).is_dir();
        if !has("chats") && !has("conversation_transcripts") {
            return Err(SourceError::NotASource(source.to_owned()));
        }
        Ok(resolved)
    }
}

/// Scans resolved sources (from [`Roots::resolve`]) into `found`.
pub fn scan(sources: &[PathBuf], found: &mut Found) {
    for source in sources {
        // Resolved when the job was accepted; refuse it if it has since become something else.
        match std::fs::canonicalize(source) {
            Ok(real) if real == *source => {}
            _ => {
                found.error(
                    source,
                    "the source changed (moved, or became a link) since it was checked",
                );
                continue;
            }
        }
        scan_dir(source, "chats", found, |path, stem, _| {
            stem.strip_prefix("chat_")
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("{} is not named chat_{{session_id}}.json", path.display()))
        });
        scan_dir(
            source,
            "conversation_transcripts",
            found,
            |_, stem, json| match json.get("session_id") {
                None => Ok(stem.to_owned()),
                Some(serde_json::Value::String(id)) => Ok(id.clone()),
                Some(other) => Err(format!("\"session_id\" is not a string: {other}")),
            },
        );
    }
}

/// Whether the real path of `path` lies under `source` (itself a real path); the error says
/// where it leads otherwise.
fn inside(source: &Path, path: &Path) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    if real.starts_with(source) {
        Ok(real)
    } else {
        Err(format!(
            "resolves to {}, outside the source {}: not followed",
            real.display(),
            source.display()
        ))
    }
}

/// Reads every `*.json` file of `source/name` (not recursively), naming each session with
/// `id_of`.
fn scan_dir(
    source: &Path,
    name: &str,
    found: &mut Found,
    id_of: impl Fn(&Path, &str, &serde_json::Value) -> Result<String, String>,
) {
    let dir = source.join(name);
    if std::fs::symlink_metadata(&dir).is_err() {
        return;
    }
    let dir = match inside(source, &dir) {
        Ok(real) => real,
        Err(e) => {
            found.error(&dir, e);
            return;
        }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            found.error(&dir, e.to_string());
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        found.files += 1;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                found.error(&path, "symbolic link: not followed");
                continue;
            }
            Ok(meta) if !meta.is_file() => {
                found.error(&path, "not a regular file");
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                found.error(&path, e.to_string());
                continue;
            }
        }
        if let Err(e) = inside(source, &path) {
            found.error(&path, e);
            continue;
        }
        let json: serde_json::Value =
            match read_regular(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))
                }) {
                Ok(json) => json,
                Err(e) => {
                    found.error(&path, e);
                    continue;
                }
            };
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        match id_of(&path, stem, &json) {
            Ok(id) => found.add(&path, &id),
            Err(e) => found.error(&path, e),
        }
    }
}

/// Reads a regular file without following a link in its last component, and without blocking
/// on a FIFO put there after it was checked.
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The census-shaped tree the tests scan (shared with the integration tests).
#[cfg(test)]
#[path = "../../tests/common/census.rs"]
mod census;

#[cfg(test)]
mod tests {
    use super::census::write_census_tree;
    use super::*;

    #[test]
    fn a_job_takes_up_to_100_sources_each_named_once() {
        let dirs: Vec<PathBuf> = (0..MAX_SOURCES)
            .map(|i| PathBuf::from(format!("/data/{i}")))
            .collect();
        assert_eq!(check_list(&dirs), Ok(()));
        assert_eq!(check_list(&[]), Ok(()));
        let mut too_many = dirs.clone();
        too_many.push("/data/extra".into());
        assert_eq!(check_list(&too_many), Err(SourceError::TooMany(101)));
        let mut repeated = dirs[..3].to_vec();
        repeated.push(dirs[1].clone());
        let refused = check_list(&repeated).unwrap_err();
        assert_eq!(
            refused,
            SourceError::Repeated {
                index: 3,
                first: 1,
                path: "/data/1".into()
            }
        );
        assert_eq!(
            refused.to_string(),
            "sources[3] is sources[1] again (/data/1): name each source once"
        );
    }

    #[test]
    fn the_census_tree_has_54_unique_sessions_and_reports_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let expected = write_census_tree(dir.path(), 3).unwrap();
        assert_eq!(expected.len(), 54);
        let mut found = Found::default();
        scan(&[dir.path().to_owned()], &mut found);
        assert_eq!(found.ids, expected);
        assert_eq!(found.files, 1 + 54 + 3);
        assert_eq!(found.errors.len(), 3, "{:?}", found.errors);
        assert!(found.errors.iter().all(|e| e.path.contains("broken-")));
        assert!(
            found
                .errors
                .iter()
                .any(|e| e.error.contains("not a string"))
        );
    }

    #[test]
    fn roots_refuse_paths_outside_them_dots_and_links_included() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        for dir in [&root, &outside] {
            std::fs::create_dir_all(dir.join("data/chats")).unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = Roots::new([root.clone()]);
        assert!(roots.resolve(root.join("data").to_str().unwrap()).is_ok());
        let dotted = format!("{}/../outside/data", root.display());
        assert_eq!(
            roots.resolve(&dotted),
            Err(SourceError::OutsideRoots(dotted.clone()))
        );
        let linked = format!("{}/link/data", root.display());
        assert!(matches!(
            roots.resolve(&linked),
            Err(SourceError::OutsideRoots(_))
        ));
        assert!(matches!(
            roots.resolve("/nonexistent/x"),
            Err(SourceError::Missing(_))
        ));
        assert!(matches!(
            roots.resolve(root.to_str().unwrap()),
            Err(SourceError::NotASource(_))
        ));
        assert_eq!(Roots::default().resolve("/"), Err(SourceError::NoRoots));
    }

    #[test]
    fn a_directory_link_out_of_the_root_is_refused_with_its_name() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(root.join("data/conversation_transcripts")).unwrap();
        std::fs::write(
            root.join("data/conversation_transcripts/t1.json"),
            r#"{"session_id": "inside-1"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(outside.join("chats")).unwrap();
        std::fs::write(outside.join("chats/chat_secret-1.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.join("chats"), root.join("data/chats")).unwrap();
        let roots = Roots::new([root.clone()]);
        let source = roots
            .resolve(root.join("data").to_str().unwrap())
            .expect("the source itself is inside the root");
        let mut found = Found::default();
        scan(&[source], &mut found);
        assert_eq!(
            found.ids.iter().collect::<Vec<_>>(),
            ["inside-1"],
            "nothing read through the link"
        );
        assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
        assert!(
            found.errors[0].path.ends_with("data/chats"),
            "{:?}",
            found.errors
        );
        assert!(found.errors[0].error.contains("outside the source"));
    }

    #[test]
    fn a_link_inside_the_source_may_be_followed() {
        let dir = tempfile::tempdir().unwrap();
        let source = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(source.join("old/chats")).unwrap();
        std::fs::write(source.join("old/chats/chat_s1.json"), "{}").unwrap();
        std::os::unix::fs::symlink(source.join("old/chats"), source.join("chats")).unwrap();
        let mut found = Found::default();
        scan(&[source], &mut found);
        assert_eq!(found.ids.iter().collect::<Vec<_>>(), ["s1"]);
        assert!(found.errors.is_empty(), "{:?}", found.errors);
    }

    #[test]
    fn a_source_that_became_a_link_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(base.path()).unwrap();
        std::fs::create_dir_all(base.join("elsewhere/chats")).unwrap();
        std::fs::write(base.join("elsewhere/chats/chat_s1.json"), "{}").unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("source")).unwrap();
        let mut found = Found::default();
        scan(&[base.join("source")], &mut found);
        assert!(found.ids.is_empty());
        assert_eq!(found.errors.len(), 1, "{:?}", found.errors);
    }

    #[test]
    fn links_inside_a_source_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let chats = dir.path().join("chats");
        std::fs::create_dir_all(&chats).unwrap();
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, "{}").unwrap();
        std::os::unix::fs::symlink(&secret, chats.join("chat_s1.json")).unwrap();
        let mut found = Found::default();
        scan(&[dir.path().to_owned()], &mut found);
        assert!(found.ids.is_empty());
        assert_eq!(found.errors.len(), 1);
        assert!(found.errors[0].error.contains("symbolic link"));
    }
}
