//! Where configuration files come from: a plain folder (Spring's native backend) or a git
//! repository (Spring's git backend, read with gix). Both are read afresh on every request,
//! so an edit or a new commit is served at once, with no restart and no cache to clear.
//!
//! A git label is resolved explicitly, as a branch, then a tag, then a commit id: never as
//! a revision expression, so `HEAD~1` or `@{-1}` in a URL cannot name arbitrary history.

use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// The label a git repository is read at when a request names none (Spring's
/// `JGitEnvironmentProperties.MAIN_LABEL`), falling back to `master`.
pub const DEFAULT_LABEL: &str = "main";

pub enum Repository {
    Folder {
        root: PathBuf,
    },
    Git {
        repository: Box<gix::ThreadSafeRepository>,
        /// How source names refer to the repository (the configured location).
        location: String,
    },
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repository::Folder { root } => write!(f, "Folder({})", root.display()),
            Repository::Git { location, .. } => write!(f, "Git({location})"),
        }
    }
}

/// The files of one label.
pub enum Snapshot<'a> {
    Folder {
        root: &'a Path,
    },
    Git {
        repository: Box<gix::Repository>,
        commit: gix::ObjectId,
        location: &'a str,
    },
}

impl Repository {
    /// Opens `location`: a `file://` URL or a path; a git repository (with a `.git` folder,
    /// or bare) is read through git, anything else as a plain folder.
    pub fn open(location: &str) -> Result<Repository, String> {
        let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
        let root = path.canonicalize().map_err(|error| {
            format!(
                "cannot open the config repository {}: {error}",
                path.display()
            )
        })?;
        let is_git = root.join(".git").exists()
            || (root.join("HEAD").is_file() && root.join("objects").is_dir());
        if is_git {
            let repository = gix::open(&root)
                .map_err(|error| {
                    format!("cannot open the git repository {}: {error}", root.display())
                })?
                .into_sync();
            let location = if location.starts_with("file://") {
                location.trim_end_matches('/').to_owned()
            } else {
                format!("file://{}", root.display())
            };
            Ok(Repository::Git {
                repository: Box::new(repository),
                location,
            })
        } else {
            Ok(Repository::Folder { root })
        }
    }

    /// The files under `label`, or the default label (`main`, else `master`, whether `main`
    /// was asked for or implied).
    pub fn snapshot(&self, label: Option<&str>) -> Result<Snapshot<'_>, ConfigError> {
        match self {
            Repository::Folder { root } => match label {
                None | Some("main") | Some("master") => Ok(Snapshot::Folder { root }),
                Some(other) => Err(ConfigError::UnknownLabel(other.to_owned())),
            },
            Repository::Git {
                repository,
                location,
            } => {
                let repository = repository.to_thread_local();
                // The default label, asked for or not, falls back to `master` as Spring's
                // `tryMasterBranch` does.
                let commit = match label {
                    None | Some(DEFAULT_LABEL) => resolve(&repository, DEFAULT_LABEL)
                        .or_else(|| resolve(&repository, "master"))
                        .ok_or_else(|| ConfigError::UnknownLabel("main".to_owned()))?,
                    Some(label) => resolve(&repository, label)
                        .ok_or_else(|| ConfigError::UnknownLabel(label.to_owned()))?,
                };
                Ok(Snapshot::Git {
                    repository: Box::new(repository),
                    commit,
                    location,
                })
            }
        }
    }
}

/// A branch, a tag, or a (possibly abbreviated) commit id, peeled to its commit.
fn resolve(repository: &gix::Repository, label: &str) -> Option<gix::ObjectId> {
    for name in [
        format!("refs/heads/{label}"),
        format!("refs/tags/{label}"),
        format!("refs/remotes/origin/{label}"),
    ] {
        if let Ok(mut reference) = repository.find_reference(name.as_str()) {
            if let Ok(id) = reference.peel_to_id() {
                let object = repository.find_object(id).ok()?;
                return object.peel_to_commit().ok().map(|commit| commit.id);
            }
        }
    }
    let is_hex = (4..=40).contains(&label.len()) && label.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex {
        let id = repository.rev_parse_single(label).ok()?;
        let object = id.object().ok()?;
        return object.peel_to_commit().ok().map(|commit| commit.id);
    }
    None
}

impl Snapshot<'_> {
    /// The commit id for git; `None` for a folder.
    pub fn version(&self) -> Option<String> {
        match self {
            Snapshot::Folder { .. } => None,
            Snapshot::Git { commit, .. } => Some(commit.to_string()),
        }
    }

    /// How a property source names the file at `relative`.
    pub fn source_name(&self, relative: &str) -> String {
        match self {
            Snapshot::Folder { root } => format!("file:{}/{relative}", root.display()),
            Snapshot::Git { location, .. } => format!("{location}/{relative}"),
        }
    }

    /// The bytes of the file at `relative` (a repo-relative path already checked to stay
    /// inside the repository), or `None` when there is no such file.
    pub fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        match self {
            Snapshot::Folder { root } => {
                let path = root.join(relative);
                let Ok(resolved) = path.canonicalize() else {
                    return Ok(None);
                };
                // A symlink must not lead out of the repository either.
                if !resolved.starts_with(root) || !resolved.is_file() {
                    return Ok(None);
                }
                std::fs::read(&resolved)
                    .map(Some)
                    .map_err(|error| ConfigError::Unreadable {
                        file: relative.to_owned(),
                        reason: error.to_string(),
                    })
            }
            Snapshot::Git {
                repository, commit, ..
            } => {
                let unreadable = |reason: String| ConfigError::Unreadable {
                    file: relative.to_owned(),
                    reason,
                };
                let commit = repository
                    .find_object(*commit)
                    .map_err(|error| unreadable(error.to_string()))?
                    .into_commit();
                let tree = commit
                    .tree()
                    .map_err(|error| unreadable(error.to_string()))?;
                let Some(entry) = tree
                    .lookup_entry_by_path(relative)
                    .map_err(|error| unreadable(error.to_string()))?
                else {
                    return Ok(None);
                };
                if !entry.mode().is_blob() {
                    return Ok(None);
                }
                let blob = entry
                    .object()
                    .map_err(|error| unreadable(error.to_string()))?;
                Ok(Some(blob.data.clone()))
            }
        }
    }
}
