//! The component spec files read and checked the way Elastic Agent reads them, and the
//! command line the agent builds from them.
//!
//! Two generations. `agent-shipper.spec.yml` declares a `shippers:` entry, checked by the
//! rules of agents 8.6–8.15 (`pkg/component` spec.go, shipper_spec.go, load.go,
//! platforms.go at the last release with shippers): version 2; a `shippers:` entry needs
//! `name`, `description`, at least one platform from the agent's list, at least one
//! output, and a `command`; no platform twice; command timeouts default to checkin 30 s,
//! restart 10 s, stop 30 s. `agent-shipper-input.spec.yml` declares an `inputs:` entry,
//! checked by the rules of today's agents (8.16 and 9.x; `pkg/component` spec.go,
//! input_spec.go, load.go, platforms.go on main): the same required fields, `command` or
//! `service`, outputs without repeats, an input name defined at most once per platform in
//! a directory; a `shippers:` key is ignored there. In both, the binary is the spec's file
//! name minus `.spec.yml`, in the same directory, and must exist when the agent loads the
//! directory; `command.name` changes only the name the agent's logs and monitoring see.

use agent_shipper::config::HumanDuration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Platforms agents 8.6–8.15 know (`GlobalPlatforms`); any other is refused.
pub const KNOWN_PLATFORMS: &[&str] = &[
    "container/amd64",
    "container/arm64",
    "darwin/amd64",
    "darwin/arm64",
    "linux/amd64",
    "linux/arm64",
    "windows/amd64",
];

/// Platforms today's agent knows (`GlobalPlatforms` on main: 8.x's list plus windows/arm64).
pub const CURRENT_AGENT_PLATFORMS: &[&str] = &[
    "container/amd64",
    "container/arm64",
    "darwin/amd64",
    "darwin/arm64",
    "linux/amd64",
    "linux/arm64",
    "windows/amd64",
    "windows/arm64",
];

/// What agents from 9.4 keep back from `timeouts.stop` before SIGKILL (`ShutdownBuffer`:
/// the 3 s reap time plus 2 s); older agents SIGKILL at `timeouts.stop` itself.
pub const CURRENT_AGENT_SHUTDOWN_BUFFER: Duration = Duration::from_secs(5);

/// Output types an agent shipper could serve (those of Elastic's own shipper spec).
pub const KNOWN_OUTPUTS: &[&str] = &["elasticsearch", "kafka", "logstash", "redis"];

/// What the agent appends to every spec's file name to find it.
pub const SPEC_SUFFIX: &str = ".spec.yml";

/// Why a spec is refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not YAML of the spec's shape.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// The parser's error.
        source: serde_yaml_ng::Error,
    },
    /// A rule of the agent's is broken.
    #[error("{0}")]
    Invalid(String),
}

/// A component spec file (`Spec` in the agent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Must be 2.
    pub version: u32,
    /// Input types the component provides (none for a shipper).
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// Shipper types the component provides.
    #[serde(default)]
    pub shippers: Vec<ShipperSpec>,
}

/// One `shippers:` entry (`ShipperSpec` in the agent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperSpec {
    /// The shipper type; inputs' specs list it under `shippers:`.
    #[serde(default)]
    pub name: String,
    /// Human description (required by the agent).
    #[serde(default)]
    pub description: String,
    /// `os/arch` pairs from [`KNOWN_PLATFORMS`].
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Output types (the policy's `outputs.<name>.type`) this shipper serves.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Runtime preventions (EQL conditions), passed through unchecked.
    #[serde(default)]
    pub runtime: Option<serde_yaml_ng::Value>,
    /// How to run it; the only runtime shippers have.
    #[serde(default)]
    pub command: Option<CommandSpec>,
}

/// One `inputs:` entry (`InputSpec` in today's agent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input type: a policy input's `type` selects it.
    #[serde(default)]
    pub name: String,
    /// Other types that select it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Human description (required by the agent).
    #[serde(default)]
    pub description: String,
    /// `os/arch` pairs from [`CURRENT_AGENT_PLATFORMS`].
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Output types (the policy's `outputs.<name>.type`) it may be given.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Fleet actions forwarded to it.
    #[serde(default)]
    pub proxied_actions: Vec<String>,
    /// Runtime preventions (EQL conditions), passed through unchecked.
    #[serde(default)]
    pub runtime: Option<serde_yaml_ng::Value>,
    /// How to run it as a subprocess.
    #[serde(default)]
    pub command: Option<CommandSpec>,
    /// How to run it as a service (not used by agent-shipper).
    #[serde(default)]
    pub service: Option<serde_yaml_ng::Value>,
    /// One component per policy input instead of one per output.
    #[serde(default)]
    pub isolate_units: bool,
    /// OTel runtime only.
    #[serde(default)]
    pub single_receiver: bool,
}

/// `command:` of a spec entry (`CommandSpec` in the agent).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandSpec {
    /// The name the agent's monitoring sees (not the file it runs).
    pub name: Option<String>,
    /// Arguments before the agent's own.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<CommandEnv>,
    /// Check-in, restart and stop timeouts.
    pub timeouts: CommandTimeouts,
    /// Log key names, when not the ECS defaults.
    pub log: Option<serde_yaml_ng::Value>,
    /// Window for counting restarts.
    pub restart_monitoring_period: Option<HumanDuration>,
    /// Restarts allowed per window.
    pub maximum_restarts_per_period: Option<u32>,
}

/// One `command.env` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEnv {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `command.timeouts`; a missing one takes the agent's default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandTimeouts {
    /// Period per missed check-in (default 30 s).
    pub checkin: Option<HumanDuration>,
    /// Delay before a crashed process is started again (default 10 s).
    pub restart: Option<HumanDuration>,
    /// Time from SIGTERM to SIGKILL (default 30 s).
    pub stop: Option<HumanDuration>,
}

impl CommandTimeouts {
    /// Check-in period.
    pub fn checkin(&self) -> Duration {
        self.checkin
            .map_or(Duration::from_secs(30), HumanDuration::get)
    }

    /// Restart delay.
    pub fn restart(&self) -> Duration {
        self.restart
            .map_or(Duration::from_secs(10), HumanDuration::get)
    }

    /// SIGTERM to SIGKILL.
    pub fn stop(&self) -> Duration {
        self.stop
            .map_or(Duration::from_secs(30), HumanDuration::get)
    }
}

impl ComponentSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let spec: ComponentSpec =
            serde_yaml_ng::from_str(&text).map_err(|source| SpecError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The agent's rules for a spec that declares shippers.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |text: String| Err(SpecError::Invalid(text));
        if self.version != 2 {
            return invalid("only version 2 is allowed".into());
        }
        for (i, shipper) in self.shippers.iter().enumerate() {
            let at = format!("shippers.{i}");
            if shipper.name.is_empty() {
                return invalid(format!("{at}.name is required"));
            }
            if shipper.description.is_empty() {
                return invalid(format!("{at}.description is required"));
            }
            if shipper.platforms.is_empty() {
                return invalid(format!("{at}.platforms needs at least one platform"));
            }
            if shipper.outputs.is_empty() {
                return invalid(format!("{at}.outputs needs at least one output"));
            }
            if shipper.command.is_none() {
                return invalid(format!(
                    "shipper '{}' must define command (no other type is supported for shippers)",
                    shipper.name
                ));
            }
            for (j, platform) in shipper.platforms.iter().enumerate() {
                if !KNOWN_PLATFORMS.contains(&platform.as_str()) {
                    return invalid(format!(
                        "shipper '{}' defines an unknown platform '{platform}'",
                        shipper.name
                    ));
                }
                if shipper.platforms[..j].contains(platform) {
                    return invalid(format!(
                        "shipper '{}' defines the platform '{platform}' more than once",
                        shipper.name
                    ));
                }
            }
            for output in &shipper.outputs {
                if !KNOWN_OUTPUTS.contains(&output.as_str()) {
                    return invalid(format!(
                        "shipper '{}' serves an unknown output '{output}'",
                        shipper.name
                    ));
                }
            }
            let earlier = &self.shippers[..i];
            if let Some(twin) = earlier.iter().find(|s| s.name == shipper.name) {
                if let Some(p) = shipper
                    .platforms
                    .iter()
                    .find(|p| twin.platforms.contains(p))
                {
                    return invalid(format!(
                        "shipper '{}' at {at} defines the platform '{p}' as a previous definition",
                        shipper.name
                    ));
                }
            }
        }
        self.validate_inputs()
    }

    /// Today's agent's rules for `inputs:` entries (`Spec.Validate`, `InputSpec.Validate`
    /// and the fields it requires).
    fn validate_inputs(&self) -> Result<(), SpecError> {
        let invalid = |text: String| Err(SpecError::Invalid(text));
        for (i, input) in self.inputs.iter().enumerate() {
            let at = format!("inputs.{i}");
            if input.name.is_empty() {
                return invalid(format!("{at}.name is required"));
            }
            if input.description.is_empty() {
                return invalid(format!("{at}.description is required"));
            }
            if input.platforms.is_empty() {
                return invalid(format!("{at}.platforms needs at least one platform"));
            }
            if input.command.is_none() && input.service.is_none() {
                return invalid(format!(
                    "input '{}' must define either command or service",
                    input.name
                ));
            }
            for (j, platform) in input.platforms.iter().enumerate() {
                if !CURRENT_AGENT_PLATFORMS.contains(&platform.as_str()) {
                    return invalid(format!(
                        "input '{}' defines an unknown platform '{platform}'",
                        input.name
                    ));
                }
                if input.platforms[..j].contains(platform) {
                    return invalid(format!(
                        "input '{}' defines the platform '{platform}' more than once",
                        input.name
                    ));
                }
            }
            if input.outputs.is_empty() {
                return invalid(format!(
                    "input '{}' must define at least one output",
                    input.name
                ));
            }
            for (j, output) in input.outputs.iter().enumerate() {
                if input.outputs[..j].contains(output) {
                    return invalid(format!(
                        "input '{}' defines the output '{output}' more than once",
                        input.name
                    ));
                }
            }
            let earlier = &self.inputs[..i];
            for twin in earlier.iter().filter(|s| s.name == input.name) {
                if input.platforms.iter().any(|p| twin.platforms.contains(p)) {
                    return invalid(format!(
                        "input '{}' at {at} defines the same platform as a previous definition",
                        input.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The shipper entry an agent on `platform` (`os/arch`) would run.
    pub fn shipper_for(&self, platform: &str) -> Option<&ShipperSpec> {
        self.shippers
            .iter()
            .find(|s| s.platforms.iter().any(|p| p == platform))
    }
}

impl ComponentSpec {
    /// The input entry named `name` an agent on `platform` (`os/arch`) would run.
    pub fn input_for(&self, name: &str, platform: &str) -> Option<&InputSpec> {
        self.inputs
            .iter()
            .find(|s| s.name == name && s.platforms.iter().any(|p| p == platform))
    }
}

/// The `key=value` overrides of an argument list made only of `-E key=value` pairs, the
/// shape the spec's `command.args` and the agent's own `-E path.data=…` have.
pub fn e_overrides(args: &[String]) -> Result<Vec<String>, SpecError> {
    let mut overrides = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag != "-E" {
            return Err(SpecError::Invalid(format!(
                "argument '{flag}' is not -E (agent-shipper takes only -E key=value)"
            )));
        }
        let Some(pair) = rest.next() else {
            return Err(SpecError::Invalid("-E without key=value".into()));
        };
        overrides.push(pair.clone());
    }
    Ok(overrides)
}

/// One input type a components directory provides, as the agent's `LoadRuntimeSpecs`
/// maps it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRuntime {
    /// The spec file that declares it.
    pub spec_path: PathBuf,
    /// The binary the agent runs: the spec file's name minus `.spec.yml`.
    pub binary: PathBuf,
    /// The entry.
    pub input: InputSpec,
}

/// Loads every `*.spec.yml` in `dir` as today's agent does for `platform`: each must pass
/// the rules and have its binary beside it (a missing binary fails the whole directory,
/// so the agent runs nothing), and an input name (or alias) may be defined only once per
/// platform across the files. Returns the inputs this platform gets.
pub fn load_components_dir(dir: &Path, platform: &str) -> Result<Vec<InputRuntime>, SpecError> {
    let read = |source| SpecError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut specs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    specs.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(SPEC_SUFFIX))
    });
    specs.sort();
    let mut found: Vec<InputRuntime> = Vec::new();
    for spec_path in specs {
        let spec = ComponentSpec::load(&spec_path)?;
        let binary = binary_for(&spec_path)
            .ok_or_else(|| SpecError::Invalid(format!("{} has no name", spec_path.display())))?;
        if !binary.metadata().is_ok_and(|m| !m.is_dir()) {
            return Err(SpecError::Invalid(format!(
                "missing matching binary for {}",
                spec_path.display()
            )));
        }
        for input in spec.inputs {
            if !input.platforms.iter().any(|p| p == platform) {
                continue;
            }
            let names = || std::iter::once(&input.name).chain(&input.aliases);
            if let Some(twin) = found
                .iter()
                .find(|f| names().any(|n| *n == f.input.name || f.input.aliases.contains(n)))
            {
                return Err(SpecError::Invalid(format!(
                    "failed loading spec '{}': input '{}' already exists in spec '{}'",
                    spec_path.display(),
                    input.name,
                    twin.spec_path.display()
                )));
            }
            found.push(InputRuntime {
                spec_path: spec_path.clone(),
                binary: binary.clone(),
                input,
            });
        }
    }
    Ok(found)
}

/// The agent's check before it starts a component's binary (`HasStrictExecPerms`): a
/// file, executable by its owner, writable by nobody else. Symlinks are followed.
pub fn check_exec_perms(binary: &Path) -> Result<(), SpecError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(binary).map_err(|source| SpecError::Read {
        path: binary.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode();
    if meta.is_dir() {
        return Err(SpecError::Invalid(format!(
            "{} is a directory",
            binary.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(SpecError::Invalid(format!(
            "{} cannot be writeable by group or other",
            binary.display()
        )));
    }
    if mode & 0o100 == 0 {
        return Err(SpecError::Invalid(format!(
            "{} not executable by owner",
            binary.display()
        )));
    }
    Ok(())
}

/// This machine's platform in the agent's naming (`linux/amd64`, `linux/arm64`).
pub fn this_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// The binary the agent runs for the spec at `spec_path`: the file name minus `.spec.yml`,
/// in the same directory.
pub fn binary_for(spec_path: &Path) -> Option<PathBuf> {
    let name = spec_path.file_name()?.to_str()?;
    let stem = name.strip_suffix(SPEC_SUFFIX)?;
    Some(spec_path.with_file_name(stem))
}

/// The repository's `agent-shipper.spec.yml`, or the one beside `shipper_bin` when it
/// has one (the layout of a package unpacked into the agent's components directory).
pub fn spec_path_for(shipper_bin: &Path) -> PathBuf {
    beside_or_in_repository(shipper_bin, "agent-shipper.spec.yml")
}

/// The repository's `agent-shipper-input.spec.yml` (today's agents), or the one beside
/// `shipper_bin` when it has one.
pub fn input_spec_path_for(shipper_bin: &Path) -> PathBuf {
    beside_or_in_repository(shipper_bin, INPUT_SPEC_FILE)
}

/// `file_name` beside `shipper_bin` if it is there, else at the repository's root.
fn beside_or_in_repository(shipper_bin: &Path, file_name: &str) -> PathBuf {
    let beside = shipper_bin.with_file_name(file_name);
    if beside.is_file() {
        return beside;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join(file_name)
}

/// The spec file name of the `inputs:` entry.
pub const INPUT_SPEC_FILE: &str = "agent-shipper-input.spec.yml";

/// The input type of the `inputs:` entry (and `AGENT_COMPONENT_TYPE` of its processes).
pub const INPUT_NAME: &str = "agent-shipper";

/// The argument list the agent passes: the spec's `command.args`, then whatever the
/// agent adds itself (`extra`, where its monitoring flags would go), then
/// `-E path.data=<data_dir>`.
pub fn command_args(command: &CommandSpec, extra: &[String], data_dir: &Path) -> Vec<String> {
    let mut args = command.args.clone();
    args.extend(extra.iter().cloned());
    args.push("-E".into());
    args.push(format!("path.data={}", data_dir.display()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ComponentSpec, SpecError> {
        let spec: ComponentSpec =
            serde_yaml_ng::from_str(text).map_err(|source| SpecError::Parse {
                path: PathBuf::from("test.spec.yml"),
                source,
            })?;
        spec.validate()?;
        Ok(spec)
    }

    const GOOD: &str = "version: 2\nshippers:\n  - name: shipper\n    description: d\n    platforms: [linux/amd64]\n    outputs: [elasticsearch]\n    command: {args: [\"-E\", \"logging.level=info\"]}\n";

    #[test]
    fn a_minimal_shipper_spec_passes_and_takes_the_agents_default_timeouts() {
        let spec = parse(GOOD).unwrap();
        let command = spec.shippers[0].command.as_ref().unwrap();
        assert_eq!(command.timeouts.stop(), Duration::from_secs(30));
        assert_eq!(command.timeouts.checkin(), Duration::from_secs(30));
        assert_eq!(command.timeouts.restart(), Duration::from_secs(10));
    }

    #[test]
    fn the_agents_rules_refuse_what_it_refuses() {
        for (broken, why) in [
            (GOOD.replace("version: 2", "version: 1"), "version"),
            (
                GOOD.replace("linux/amd64", "linux/x86_64"),
                "unknown platform",
            ),
            (
                GOOD.replace("[linux/amd64]", "[linux/amd64, linux/amd64]"),
                "more than once",
            ),
            (GOOD.replace("[elasticsearch]", "[]"), "at least one output"),
            (GOOD.replace("    description: d\n", ""), "description"),
            (
                GOOD.replace(
                    "    command: {args: [\"-E\", \"logging.level=info\"]}\n",
                    "",
                ),
                "must define command",
            ),
        ] {
            let err = parse(&broken).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        assert!(
            parse(&GOOD.replace("args:", "argz:")).is_err(),
            "unknown keys"
        );
        assert!(
            parse(&GOOD.replace(
                "[\"-E\", \"logging.level=info\"]",
                "\"-E logging.level=info\""
            ))
            .is_err(),
            "args must be a list"
        );
    }

    const GOOD_INPUT: &str = "version: 2\ninputs:\n  - name: agent-shipper\n    description: d\n    platforms: [linux/amd64, windows/arm64]\n    outputs: [elasticsearch]\n    command: {args: [\"-E\", \"logging.level=info\"]}\n";

    #[test]
    fn todays_agents_input_rules_refuse_what_it_refuses() {
        let spec = parse(GOOD_INPUT).unwrap();
        assert!(spec.input_for("agent-shipper", "linux/amd64").is_some());
        assert!(spec.input_for("agent-shipper", "linux/arm64").is_none());
        for (broken, why) in [
            (GOOD_INPUT.replace("version: 2", "version: 1"), "version"),
            (
                GOOD_INPUT.replace("linux/amd64,", "linux/x86_64,"),
                "unknown platform",
            ),
            (
                GOOD_INPUT.replace("windows/arm64", "linux/amd64"),
                "more than once",
            ),
            (
                GOOD_INPUT.replace("[elasticsearch]", "[]"),
                "at least one output",
            ),
            (
                GOOD_INPUT.replace("[elasticsearch]", "[elasticsearch, elasticsearch]"),
                "output 'elasticsearch' more than once",
            ),
            (GOOD_INPUT.replace("    description: d\n", ""), "description"),
            (
                GOOD_INPUT.replace(
                    "    command: {args: [\"-E\", \"logging.level=info\"]}\n",
                    "",
                ),
                "either command or service",
            ),
            (
                format!(
                    "{GOOD_INPUT}  - name: agent-shipper\n    description: d\n    platforms: [linux/amd64]\n    outputs: [elasticsearch]\n    command: {{}}\n"
                ),
                "same platform as a previous definition",
            ),
        ] {
            let err = parse(&broken).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        assert!(
            parse(&GOOD_INPUT.replace("outputs:", "output:")).is_err(),
            "unknown keys"
        );
    }

    #[test]
    fn e_overrides_take_only_e_pairs() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            e_overrides(&args(&["-E", "a=1", "-E", "b=2"])).unwrap(),
            ["a=1", "b=2"]
        );
        assert!(e_overrides(&args(&["-E"])).is_err());
        assert!(e_overrides(&args(&["--flag", "a=1"])).is_err());
    }

    #[test]
    fn the_binary_is_the_spec_file_name_minus_the_suffix() {
        assert_eq!(
            binary_for(Path::new("/c/agent-shipper.spec.yml")),
            Some(PathBuf::from("/c/agent-shipper"))
        );
        assert_eq!(binary_for(Path::new("/c/agent-shipper.yml")), None);
    }
}
