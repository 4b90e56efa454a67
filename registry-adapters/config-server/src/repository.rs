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
        /// Where files are searched, as relative prefixes, highest first: the label
        /// sub-folders that exist (`release/`), which Spring's native backend searches
        /// above the folder itself (`add-label-locations`), and the folder (`""`).
        locations: Vec<String>,
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
    /// was asked for or implied); a folder's files whatever the label.
    pub fn snapshot(&self, label: Option<&str>) -> Result<Snapshot<'_>, ConfigError> {
        match self {
            // Spring's native backend serves its folder for any label (the label only adds
            // a sub-folder of that name, when there is one, to the search locations), so a
            // client started with `spring.cloud.config.label=release` gets the folder.
            Repository::Folder { root } => Ok(Snapshot::Folder {
                root,
                locations: folder_locations(root, label),
            }),
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

/// Where a folder is searched for `label`, as prefixes of a relative path, highest first:
/// the sub-folders named by the label (a comma-separated list, the first label highest),
/// or by `master` when no label was asked for (Spring's native default label), then the
/// folder itself. An empty label names the folder itself at its place in the list, as the
/// real server ranks `release,,hotfix` (release, the folder, hotfix). A sub-folder that
/// would lead out of the folder (a symlink) is not one.
fn folder_locations(root: &Path, label: Option<&str>) -> Vec<String> {
    let mut locations: Vec<String> = Vec::new();
    let mut add = |location: String| {
        if !locations.contains(&location) {
            locations.push(location);
        }
    };
    for label in label.unwrap_or("master").split(',') {
        if label.is_empty() {
            add(String::new());
            continue;
        }
        let inside = root
            .join(label)
            .canonicalize()
            .is_ok_and(|path| path.starts_with(root) && path != root && path.is_dir());
        if inside {
            add(format!("{label}/"));
        }
    }
    add(String::new());
    locations
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

    /// Where configuration files are searched, as prefixes of a relative path, highest
    /// first: a folder's label sub-folders, then the top level.
    pub fn locations(&self) -> Vec<&str> {
        match self {
            Snapshot::Folder { locations, .. } => locations.iter().map(String::as_str).collect(),
            Snapshot::Git { .. } => vec![""],
        }
    }

    /// How a property source names the file at `relative`.
    pub fn source_name(&self, relative: &str) -> String {
        match self {
            Snapshot::Folder { root, .. } => format!("file:{}/{relative}", root.display()),
            Snapshot::Git { location, .. } => format!("{location}/{relative}"),
        }
    }

    /// The bytes of the file at `relative` (a repo-relative path already checked to stay
    /// inside the repository), or `None` when there is no such file.
    pub fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        match self {
            Snapshot::Folder { root, .. } => {
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
