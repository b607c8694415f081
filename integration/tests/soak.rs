//! The soak driver, short: ten seconds of faults, rotations, an input removal and SIGKILLs
//! end with every promised event indexed or dead-lettered. (`scripts/soak.sh` runs it for
//! minutes; this only proves the driver and its accounting.)

use integration::soak::{self, SoakOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let shipper = integration::shipper_binary().unwrap();
    let mut options = SoakOptions::new(shipper, data.path().to_path_buf(), 7);
    options.duration = Duration::from_secs(10);
    options.rate_per_s = 200;
    options.rotate_every = Duration::from_secs(2);
    options.kill_gap = (Duration::from_secs(3), Duration::from_secs(4));
    options.drain_timeout = Duration::from_secs(60);
    let report = tokio::time::timeout(Duration::from_secs(120), soak::run(&options))
        .await
        .expect("the soak finishes")
        .expect("the soak runs");
    eprintln!("{report:?}");
    let d = &report.delivery;
    assert!(d.promised > 500, "a real load was promised: {d:?}");
    assert_eq!(d.lost, 0, "{d:?}");
    assert_eq!(d.promised, d.indexed + d.dead_lettered, "{d:?}");
    // A duplicate is legitimate only when loadgen sent the event twice.
    assert_eq!(report.unexplained_duplicates(), 0, "{report:?}");
    assert!(report.kills >= 2, "killed at least twice: {report:?}");
    assert!(report.rotations >= 2, "rotated the key: {report:?}");
    assert!(report.input_changes >= 1, "removed input-b: {report:?}");
    assert!(report.faults > 0, "mock-es injected faults: {report:?}");
}
