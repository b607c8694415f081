//! The component package: both spec files follow their agents' rules (`shippers:` for
//! 8.6–8.15, `inputs:` for 8.16 and 9.x), mock-agent spawns the shipper from the 8.x spec
//! as that agent does, wires INPUT units as it does, and `scripts/package.sh` writes the
//! tarball (both binaries and both specs, loadable as today's agent loads a components
//! directory) and its checksum.

mod common;

use agent_shipper::proto::agent::{State, UnitLogLevel, UnitType};
use common::{revision, WAIT};
use integration::agent::{MockAgent, MockAgentOptions, UnitSpec, DEFAULT_COMPONENT_ID};
use integration::component::{
    self as spec_rules, ComponentSpec, CURRENT_AGENT_PLATFORMS, CURRENT_AGENT_SHUTDOWN_BUFFER,
    KNOWN_PLATFORMS,
};
use integration::loadgen::{self, LoadgenOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn spec() -> ComponentSpec {
    ComponentSpec::load(&repo().join("agent-shipper.spec.yml")).expect("the spec passes")
}

#[test]
fn the_spec_follows_the_agents_rules_and_names_the_shipper_beats_inputs_list() {
    let spec = spec();
    assert_eq!(spec.version, 2);
    assert!(spec.inputs.is_empty(), "a shipper-only component");
    let [shipper] = spec.shippers.as_slice() else {
        panic!("one shippers: entry, got {:?}", spec.shippers);
    };
    // Beats' 8.x input specs list `shippers: [shipper]`; the agent matches by this name.
    assert_eq!(shipper.name, "shipper");
    assert!(!shipper.description.is_empty());
    assert_eq!(shipper.outputs, ["elasticsearch"]);
    for platform in &shipper.platforms {
        assert!(KNOWN_PLATFORMS.contains(&platform.as_str()), "{platform}");
    }
    for needed in ["linux/amd64", "linux/arm64"] {
        assert!(shipper.platforms.iter().any(|p| p == needed), "{needed}");
    }
    let command = shipper.command.as_ref().expect("command");
    assert_eq!(command.args, ["-E", "logging.level=info"]);
    // Without `command.name: shipper` the agent adds no `-E http.host=`, which would name
    // the very socket path it gives the INPUT units as their Producer server.
    assert_eq!(command.name, None);
    assert_eq!(command.timeouts.stop(), Duration::from_secs(30));
    assert_eq!(command.timeouts.checkin(), Duration::from_secs(30));
    assert_eq!(command.timeouts.restart(), Duration::from_secs(10));
}

/// The `inputs:` entry's type: a policy input with `type: agent-shipper` selects it.
const INPUT_TYPE: &str = "agent-shipper";

#[test]
fn the_input_spec_follows_todays_agents_rules_and_its_args_parse() {
    let path = repo().join("agent-shipper-input.spec.yml");
    let spec = ComponentSpec::load(&path).expect("the input spec passes today's agent's rules");
    assert_eq!(spec.version, 2);
    assert!(
        spec.shippers.is_empty(),
        "no shippers: today's agent has none"
    );
    let [input] = spec.inputs.as_slice() else {
        panic!("one inputs: entry, got {:?}", spec.inputs);
    };
    assert_eq!(input.name, INPUT_TYPE);
    assert!(input.aliases.is_empty());
    assert!(!input.description.is_empty());
    assert_eq!(input.outputs, ["elasticsearch"]);
    assert_eq!(
        input.platforms,
        [
            "linux/amd64",
            "linux/arm64",
            "container/amd64",
            "container/arm64"
        ]
    );
    for platform in &input.platforms {
        assert!(
            CURRENT_AGENT_PLATFORMS.contains(&platform.as_str()),
            "{platform}"
        );
    }
    assert!(
        !input.isolate_units,
        "one process per output, all INPUT units in it"
    );
    assert!(input.service.is_none());
    let command = input.command.as_ref().expect("command");
    // The binary on disk is `agent-shipper-input` (named after this file); the agent's log
    // lines say `component.binary: agent-shipper` as under 8.x, and it adds no Beats flags.
    assert_eq!(command.name.as_deref(), Some("agent-shipper"));
    assert_eq!(
        spec_rules::binary_for(&path),
        Some(repo().join("agent-shipper-input"))
    );
    assert_eq!(command.timeouts.checkin(), Duration::from_secs(30));
    assert_eq!(command.timeouts.restart(), Duration::from_secs(10));
    assert_eq!(command.timeouts.stop(), Duration::from_secs(30));

    // The whole command line the agent builds parses with the shipper's own -E parser,
    // every key known to it, and the drain fits the current agent's SIGKILL deadline.
    let data_dir =
        Path::new("/opt/Elastic/Agent/data/elastic-agent-9.6.0-abc/run/agent-shipper-default");
    let args = spec_rules::command_args(command, &[], data_dir);
    let overrides = spec_rules::e_overrides(&args).expect("only -E pairs");
    let settings = agent_shipper::config::ProcessSettings::from_overrides(
        overrides.iter().map(String::as_str),
    )
    .expect("the shipper accepts the spec's command line");
    assert!(settings.ignored.is_empty(), "{:?}", settings.ignored);
    assert_eq!(settings.data_path.as_deref(), Some(data_dir));
    assert!(
        settings.shutdown_timeout < command.timeouts.stop() - CURRENT_AGENT_SHUTDOWN_BUFFER,
        "the shipper gives up its drain before agents from 9.4 SIGKILL it"
    );
}

#[test]
fn the_repository_root_loads_as_a_components_directory_of_todays_agent() {
    // Both spec files side by side, as the package unpacks them: the shippers-only file
    // gives today's agent no input, the input file gives it `agent-shipper`, run as
    // `agent-shipper-input`. Binaries stand in as empty executables.
    let dir = tempfile::tempdir().unwrap();
    for spec in ["agent-shipper.spec.yml", "agent-shipper-input.spec.yml"] {
        std::fs::copy(repo().join(spec), dir.path().join(spec)).unwrap();
    }
    let missing = spec_rules::load_components_dir(dir.path(), "linux/amd64")
        .expect_err("a spec without its binary fails the whole directory");
    assert!(
        missing.to_string().contains("missing matching binary"),
        "{missing}"
    );
    for binary in ["agent-shipper", "agent-shipper-input"] {
        std::fs::write(dir.path().join(binary), "").unwrap();
    }
    for platform in [
        "linux/amd64",
        "linux/arm64",
        "container/amd64",
        "container/arm64",
    ] {
        let inputs = spec_rules::load_components_dir(dir.path(), platform).unwrap();
        let [only] = inputs.as_slice() else {
            panic!("{platform}: one input type, got {inputs:?}");
        };
        assert_eq!(only.input.name, INPUT_TYPE);
        assert_eq!(only.binary, dir.path().join("agent-shipper-input"));
    }
    assert!(spec_rules::load_components_dir(dir.path(), "windows/amd64")
        .unwrap()
        .is_empty());
}

fn read_nul_list(path: PathBuf) -> Vec<String> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn input(id: &str, stream: &str) -> UnitSpec {
    UnitSpec {
        id: id.into(),
        kind: UnitType::Input,
        // As the policy has it: the agent adds `server` and `ssl`.
        config: json!({"id": id, "type": "shipper", "units": [{"id": stream, "config": {"paths": ["/var/log/x.log"]}}]}),
        log_level: UnitLogLevel::Info,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_agent_spawns_the_shipper_from_the_spec_and_wires_inputs_as_the_agent_does() {
    let home = tempfile::Builder::new().prefix("agh").tempdir().unwrap();
    let bin = integration::shipper_binary().unwrap();
    let mut options = MockAgentOptions::in_home(bin.clone(), home.path());
    options.restart_on_exit = false;
    let run_dir = home.path().join("run").join(DEFAULT_COMPONENT_ID);
    assert_eq!(options.data_dir, run_dir);
    let agent = MockAgent::start(options).await.unwrap();
    let out = run_dir.join("out").join("events.ndjson");
    let output = UnitSpec {
        id: DEFAULT_COMPONENT_ID.into(),
        kind: UnitType::Output,
        config: json!({"type": "file", "path": out, "enabled": true, "shipper": {"enabled": true}, "log_level": "info"}),
        log_level: UnitLogLevel::Info,
    };
    agent.apply(&revision(
        1,
        vec![
            output,
            input("filestream-a", "filestream-a-1"),
            input("filestream-b", "filestream-b-1"),
        ],
    ));
    let units = [
        (DEFAULT_COMPONENT_ID, UnitType::Output),
        ("filestream-a", UnitType::Input),
        ("filestream-b", UnitType::Input),
    ];
    if let Err(err) = agent.wait_for_states(WAIT, &units, State::Healthy).await {
        let logs: Vec<String> = agent
            .history()
            .into_iter()
            .filter_map(|e| match e {
                integration::agent::AgentEvent::ShipperLog(line) => Some(line),
                _ => None,
            })
            .collect();
        panic!("the shipper must accept the spec's command line and the agent's unit configs: {err}\nshipper log:\n{}", logs.join("\n"));
    }

    // The process the agent started: argv, working directory and environment.
    let pid = agent.shipper_pid().expect("running");
    let argv = read_nul_list(PathBuf::from(format!("/proc/{pid}/cmdline")));
    let mut expected = vec![bin.display().to_string()];
    expected.extend(spec().shippers[0].command.as_ref().unwrap().args.clone());
    expected.extend(["-E".to_string(), format!("path.data={}", run_dir.display())]);
    assert_eq!(argv, expected);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        run_dir.canonicalize().unwrap()
    );
    let env = read_nul_list(PathBuf::from(format!("/proc/{pid}/environ")));
    assert!(env.contains(&format!("AGENT_COMPONENT_ID={DEFAULT_COMPONENT_ID}")));
    assert!(env.contains(&"AGENT_COMPONENT_TYPE=shipper".to_string()));

    // The output block as the agent sends it.
    let sent = agent
        .expected_config(DEFAULT_COMPONENT_ID, UnitType::Output)
        .unwrap();
    for gone in ["enabled", "shipper", "log_level"] {
        assert!(sent.get(gone).is_none(), "{gone} in {sent}");
    }
    // One server for every INPUT unit, a pair each from one CA.
    let a = agent
        .expected_config("filestream-a", UnitType::Input)
        .unwrap();
    let b = agent
        .expected_config("filestream-b", UnitType::Input)
        .unwrap();
    let server = format!(
        "unix://{}",
        home.path()
            .join("tmp")
            .join(format!("{DEFAULT_COMPONENT_ID}.sock"))
            .display()
    );
    assert_eq!(a["server"], json!(server));
    assert_eq!(b["server"], json!(server));
    assert_eq!(
        a["ssl"]["certificate_authorities"],
        b["ssl"]["certificate_authorities"]
    );
    assert_ne!(a["ssl"]["certificate"], b["ssl"]["certificate"]);
    assert!(a["ssl"]["key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(
        a["ssl"].get("enabled").is_none(),
        "the agent never writes it"
    );

    // A Beat publishes as it does under the agent: plaintext on that socket.
    let mut publish = LoadgenOptions::new(&server, "filestream-a-1", 200);
    publish.run = "component".into();
    let report = tokio::time::timeout(WAIT, loadgen::run(&publish))
        .await
        .expect("publishing finishes")
        .expect("a plaintext client on the agent's socket publishes");
    assert_eq!(report.promised.len(), 200);
    let counts = loadgen::wait_for_seqs_in_files(
        std::slice::from_ref(&out),
        "component",
        &report.promised,
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(counts.len(), 200, "every event reaches the output file");

    let stop = agent.launch().stop_timeout;
    assert_eq!(stop, Duration::from_secs(30));
    let exit = agent.stop(stop).await.unwrap();
    assert_eq!(
        exit,
        integration::agent::AgentEvent::ShipperExited {
            code: Some(0),
            signal: None
        }
    );
}

#[test]
fn package_script_writes_the_tarball_with_binary_and_spec_and_its_sha512() {
    let dist = tempfile::tempdir().unwrap();
    // Any executable will do: the script packages it, it does not run it.
    let fake = dist.path().join("fake-shipper");
    std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    let mut permissions = std::fs::metadata(&fake).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&fake, permissions).unwrap();
    let out = dist.path().join("dist");
    let status = std::process::Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .env("AGENT_SHIPPER_BIN", &fake)
        .env("DIST_DIR", &out)
        .status()
        .unwrap();
    assert!(status.success());

    // The shipper's version, from the root Cargo.toml's [package].
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let package = manifest.split("[package]").nth(1).expect("[package]");
    let version = package
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    let name = format!("agent-shipper-{version}-linux-{arch}");
    let tarball = out.join(format!("{name}.tar.gz"));
    assert!(tarball.is_file(), "{}", tarball.display());
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let mut files: Vec<&str> = listing.lines().filter(|l| !l.ends_with('/')).collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("{name}/agent-shipper"),
            format!("{name}/agent-shipper-input"),
            format!("{name}/agent-shipper-input.spec.yml"),
            format!("{name}/agent-shipper.spec.yml"),
        ]
    );
    // Unpacked, it is a components directory today's agent loads, and both binaries pass
    // the check the agent makes before it starts one.
    let unpacked = dist.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let components = unpacked.join(&name);
    let inputs =
        spec_rules::load_components_dir(&components, &spec_rules::this_platform()).unwrap();
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(inputs[0].input.name, INPUT_TYPE);
    for binary in ["agent-shipper", "agent-shipper-input"] {
        let path = components.join(binary);
        spec_rules::check_exec_perms(&path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&fake).unwrap(),
            "{binary} is the shipper"
        );
    }
    let check = std::process::Command::new("sha512sum")
        .arg("-c")
        .arg(format!("{name}.tar.gz.sha512"))
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walking_skeleton_scenario_plays_under_the_agents_layout_and_wiring() {
    let home = tempfile::Builder::new().prefix("agh").tempdir().unwrap();
    let scenario =
        integration::scenario::Scenario::load(&repo().join("integration/scenarios/demo.yml"))
            .unwrap();
    let mut options =
        MockAgentOptions::in_home(integration::shipper_binary().unwrap(), home.path());
    options.restart_on_exit = false;
    let data = options.data_dir.clone();
    let agent = MockAgent::start(options).await.unwrap();
    let played = tokio::time::timeout(Duration::from_secs(120), scenario.play(&agent, &data, None))
        .await
        .expect("the scenario finishes");
    let grace = agent.launch().stop_timeout;
    let exit = agent.stop(grace).await;
    played.expect("publishing without a server goes to the agent's socket, in plaintext");
    assert!(
        exited_cleanly(&exit),
        "the shipper exits 0 after SIGTERM: {exit:?}"
    );
    let counts =
        loadgen::count_seqs_in_files(&[data.join("out/events.ndjson")], "filestream-a").unwrap();
    assert_eq!(counts.len(), 5000, "A's events are all written");
}

fn exited_cleanly(exit: &anyhow::Result<integration::agent::AgentEvent>) -> bool {
    matches!(
        exit,
        Ok(integration::agent::AgentEvent::ShipperExited { code: Some(0), .. })
    )
}
