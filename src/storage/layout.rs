//! Picks the storage directory: `path.data` (8.x, standalone) or `<state root>/<component id>`.

use std::path::{Path, PathBuf};

/// The environment variable Elastic Agent 9.x sets to the component's input type.
pub const COMPONENT_TYPE_VAR: &str = "AGENT_COMPONENT_TYPE";
/// The environment variable Elastic Agent 9.x sets to the component id.
pub const COMPONENT_ID_VAR: &str = "AGENT_COMPONENT_ID";
/// The input type under which Elastic Agent 9.x runs this shipper.
pub const COMPONENT_TYPE: &str = "agent-shipper";
/// The state root's name beside `path.data` when `path.state` is not given.
pub const STATE_ROOT_NAME: &str = "agent-shipper.state";

/// What Elastic Agent 9.x says about the component in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentEnv {
    /// `AGENT_COMPONENT_TYPE`.
    pub component_type: Option<String>,
    /// `AGENT_COMPONENT_ID`.
    pub component_id: Option<String>,
}

impl ComponentEnv {
    /// Reads the two variables from the process environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        ComponentEnv {
            component_type: var(COMPONENT_TYPE_VAR),
            component_id: var(COMPONENT_ID_VAR),
        }
    }

    /// Whether the agent runs this process as an `agent-shipper` input component (9.x).
    pub fn is_input_component(&self) -> bool {
        self.component_type.as_deref().map(str::trim) == Some(COMPONENT_TYPE)
    }
}

/// Where this process keeps its queue, DLQ, lock and handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLayout {
    /// The directory: `queue/`, `dlq/`, `lock` and `handoff.json` are under it.
    pub dir: PathBuf,
    /// The state root whose other component directories this process may adopt; `None`
    /// when the storage is `path.data` itself (8.x, standalone).
    pub root: Option<PathBuf>,
}

impl StorageLayout {
    /// The layout for `path.data`, `-E path.state` and the agent's environment:
    /// `path.state` or a 9.x input component → `<root>/<component id>`, else `path.data`.
    pub fn resolve(data_path: &Path, state_path: Option<&Path>, env: &ComponentEnv) -> Self {
        if state_path.is_none() && !env.is_input_component() {
            return StorageLayout {
                dir: data_path.to_path_buf(),
                root: None,
            };
        }
        let data_path = absolute(data_path);
        let root = match state_path {
            Some(root) => root.to_path_buf(),
            None => default_root(&data_path),
        };
        let id = env
            .component_id
            .as_deref()
            .map(str::to_string)
            .or_else(|| {
                data_path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| COMPONENT_TYPE.to_string());
        StorageLayout {
            dir: root.join(directory_name(&id)),
            root: Some(root),
        }
    }

    /// The default queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    /// The default dead letter queue directory.
    pub fn dlq_dir(&self) -> PathBuf {
        self.dir.join("dlq")
    }

    /// The handoff file of this directory.
    pub fn handoff_path(&self) -> PathBuf {
        self.dir.join(super::handoff::FILE_NAME)
    }
}

/// The state root when `path.state` is not given. Under the agent, `path.data` is
/// `<top>/data/elastic-agent-<hash>/run/<component id>`; the root then goes to
/// `<top>/data/agent-shipper.state`, beside the versioned homes: the agent's upgrade copies
/// `run/` while components still write it (a queue copied mid-write, deleted segments back
/// after a rollback) and removes old homes, but leaves other names under `data/` alone.
/// Any other `path.data` gets the root beside it.
fn default_root(data_path: &Path) -> PathBuf {
    let parent = data_path.parent().unwrap_or_else(|| Path::new("/"));
    let named = |path: &Path, test: &dyn Fn(&str) -> bool| {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(test)
    };
    if named(parent, &|name| name == "run") {
        if let Some(home) = parent.parent() {
            if named(home, &|name| name.starts_with("elastic-agent-")) {
                if let Some(data) = home.parent() {
                    return data.join(STATE_ROOT_NAME);
                }
            }
        }
    }
    parent.join(STATE_ROOT_NAME)
}

/// `path` made absolute against the working directory (unchanged if that fails), so a
/// relative `path.data` still has a parent.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A component id as one directory name: characters outside `[A-Za-z0-9._-]` become `_`
/// (an output name is the user's), and `.`/`..` cannot name a parent.
fn directory_name(id: &str) -> String {
    let name: String = id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.as_str() {
        "" | "." | ".." => format!("{COMPONENT_TYPE}{}", name.replace('.', "_")),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kind: Option<&str>, id: Option<&str>) -> ComponentEnv {
        ComponentEnv {
            component_type: kind.map(str::to_string),
            component_id: id.map(str::to_string),
        }
    }

    #[test]
    fn without_the_input_component_env_or_path_state_path_data_is_kept() {
        for kind in [None, Some("filestream"), Some("shipper")] {
            let layout = StorageLayout::resolve(Path::new("/a/run/x"), None, &env(kind, None));
            assert_eq!(layout.dir, Path::new("/a/run/x"));
            assert_eq!(layout.root, None);
            assert_eq!(layout.queue_dir(), Path::new("/a/run/x/queue"));
            assert_eq!(layout.dlq_dir(), Path::new("/a/run/x/dlq"));
        }
    }

    #[test]
    fn an_input_component_keeps_its_state_beside_path_data_under_its_id() {
        let layout = StorageLayout::resolve(
            Path::new("/opt/agent/run/agent-shipper-es"),
            None,
            &env(Some("agent-shipper"), Some("agent-shipper-es")),
        );
        assert_eq!(
            layout.root.as_deref(),
            Some(Path::new("/opt/agent/run/agent-shipper.state"))
        );
        assert_eq!(
            layout.dir,
            Path::new("/opt/agent/run/agent-shipper.state/agent-shipper-es")
        );
        assert_eq!(
            layout.queue_dir(),
            Path::new("/opt/agent/run/agent-shipper.state/agent-shipper-es/queue")
        );
        assert_eq!(
            layout.handoff_path(),
            Path::new("/opt/agent/run/agent-shipper.state/agent-shipper-es/handoff.json")
        );
    }

    #[test]
    fn under_the_agents_versioned_home_the_root_is_beside_the_homes_not_in_run() {
        let layout = StorageLayout::resolve(
            Path::new("/opt/Elastic/Agent/data/elastic-agent-9.6.0-1a2b3c/run/agent-shipper-es"),
            None,
            &env(Some("agent-shipper"), Some("agent-shipper-es")),
        );
        assert_eq!(
            layout.dir,
            Path::new("/opt/Elastic/Agent/data/agent-shipper.state/agent-shipper-es"),
            "upgrades copy run/ and rollbacks restore it; data/<other name> is left alone"
        );
    }

    #[test]
    fn without_a_component_id_the_last_name_of_path_data_names_the_directory() {
        let layout = StorageLayout::resolve(
            Path::new("/h/run/agent-shipper-default"),
            None,
            &env(Some("agent-shipper"), None),
        );
        assert_eq!(
            layout.dir,
            Path::new("/h/run/agent-shipper.state/agent-shipper-default")
        );
    }

    #[test]
    fn path_state_sets_the_root_in_any_mode() {
        let layout = StorageLayout::resolve(
            Path::new("/h/run/agent-shipper-a"),
            Some(Path::new("/var/lib/shipper-state")),
            &env(None, None),
        );
        assert_eq!(
            layout.root.as_deref(),
            Some(Path::new("/var/lib/shipper-state"))
        );
        assert_eq!(
            layout.dir,
            Path::new("/var/lib/shipper-state/agent-shipper-a")
        );
    }

    #[test]
    fn a_component_id_cannot_leave_the_root() {
        for (id, name) in [
            ("../../etc", ".._.._etc"),
            ("..", "agent-shipper__"),
            ("a/b c", "a_b_c"),
        ] {
            let layout = StorageLayout::resolve(
                Path::new("/h/run/x"),
                None,
                &env(Some("agent-shipper"), Some(id)),
            );
            assert_eq!(
                layout.dir,
                Path::new("/h/run/agent-shipper.state").join(name)
            );
            assert_eq!(layout.dir.parent(), layout.root.as_deref());
        }
    }

    #[test]
    fn a_relative_path_data_still_has_a_root_beside_it() {
        let layout = StorageLayout::resolve(
            Path::new("data"),
            None,
            &env(Some("agent-shipper"), Some("c")),
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(layout.dir, cwd.join("agent-shipper.state/c"));
    }
}
